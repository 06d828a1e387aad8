"""Live control of the look, in the daemon's process: state, request models, guard, WebSocket hub,
routes, the one HTTP server, the camera's stream, tokens, the client and global hotkeys."""
