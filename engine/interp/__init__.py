"""Frame interpolators: RIFE (v4.25, v3 HD), optical flow, blend."""
