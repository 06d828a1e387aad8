"""Errors the engines raise for bad options or inputs (the daemon reports them and keeps running)."""
from __future__ import annotations


class EngineConfigError(ValueError):
    """An engine option, model folder or input that cannot be used; the message names the fix."""
