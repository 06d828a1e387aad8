"""The inference process: INPUT frames -> engine -> interpolator -> OUTPUT groups. The only one on the GPU."""
