"""Live control of the look: state, HTTP/WebSocket API, tokens."""
