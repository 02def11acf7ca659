"""Public test helpers for plugin authors (fake feed servers, fixtures)."""
