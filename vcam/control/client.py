"""A client for a running daemon's control API (used by the CLI and global hotkeys)."""
from __future__ import annotations

from typing import Any

import httpx

from vcam.config import ControlConfig
from vcam.control.token import read_token, token_path


class DaemonUnavailable(RuntimeError):
    """Nothing answers at the daemon's address."""


class ControlRequestError(RuntimeError):
    """The daemon refused a request; the message is its explanation."""

    def __init__(self, status_code: int, detail: str):
        super().__init__(detail)
        self.status_code = status_code


def daemon_url(cfg: ControlConfig) -> str:
    """Where a local client reaches the daemon configured by `cfg` (a wildcard bind is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.host, cfg.host)
    return f"http://[{host}]:{cfg.port}" if ":" in host else f"http://{host}:{cfg.port}"


def client_for(cfg: ControlConfig, url: str | None = None, timeout: float = 5.0) -> "DaemonClient":
    """A client for the daemon `cfg` describes; sends the token when the token file exists."""
    return DaemonClient(url or daemon_url(cfg), read_token(token_path(cfg.token_file)), timeout=timeout)


class DaemonClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0):
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "DaemonClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            r = self._http.request(method, "/api" + path, json=body)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            raise DaemonUnavailable(f"no daemon at {self.url}; start one with `fluxrt-cam run`") from None
        except httpx.TimeoutException:
            raise DaemonUnavailable(f"the daemon at {self.url} did not answer in time") from None
        if r.status_code == 401:
            raise ControlRequestError(401, f"the daemon at {self.url} needs its token: create it with "
                                           f"`fluxrt-cam token` (or point control.token_file at it)")
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise ControlRequestError(r.status_code, str(detail))
        return r.json()

    # ---- the API -------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """{"settings": {...}, "daemon": <the daemon's status dict>}."""
        return self._call("GET", "/status")

    def settings(self) -> dict[str, Any]:
        return self._call("GET", "/settings")

    def presets(self) -> dict[str, Any]:
        return self._call("GET", "/presets")

    def set_prompt(self, prompt: str) -> dict[str, Any]:
        return self._call("PUT", "/prompt", {"prompt": prompt})

    def apply_preset(self, ref: str | int) -> dict[str, Any]:
        """A preset name, its number (1 = the first; int or digits), 'next' or 'prev'."""
        if ref in ("next", "prev", "previous"):
            return self._call("POST", "/presets/next" if ref == "next" else "/presets/prev")
        if isinstance(ref, str) and ref.isdigit():
            ref = int(ref)
        return self._call("POST", "/presets/apply", {"preset": ref})

    def set_mode(self, mode: str) -> dict[str, Any]:
        return self._call("PUT", "/mode", {"mode": mode})

    def update(self, **fields: Any) -> dict[str, Any]:
        """seed=, steps=, mode=, cache={...}, interpolation={...}."""
        return self._call("PATCH", "/settings", {k: v for k, v in fields.items() if v is not None})
