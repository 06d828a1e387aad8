"""OBS integration: the obs-websocket bridge (the OBS-side script lives in obs_scripts/)."""
from vcam.obs.bridge import ObsBridge

__all__ = ["ObsBridge"]
