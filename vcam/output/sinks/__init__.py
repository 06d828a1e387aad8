"""Sinks fed by the output process: virtual camera, MJPEG preview, file recording."""
