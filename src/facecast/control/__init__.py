"""Live control while streaming: one action registry, global hotkeys, a local HTTP/WebSocket API and `facecast ctl`."""
