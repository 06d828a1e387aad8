"""The supervisor process: owns shared memory, runs the capture thread, starts and restarts the children."""
