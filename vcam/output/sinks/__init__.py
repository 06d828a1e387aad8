"""Sinks fed by the output process: virtual camera, file recording."""
