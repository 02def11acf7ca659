"""An example third-party mdgate provider (JSON over WebSocket)."""
