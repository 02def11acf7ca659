"""Provider connections: plugin registry, sessions, transport, checks and faults."""
