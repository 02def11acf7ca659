"""Serving clients: the WebSocket/HTTP server, fan-out and per-client limits."""
