"""The output process: OUTPUT groups -> presentation scheduling -> sinks (virtual camera, recording)."""
