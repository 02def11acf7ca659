"""Plugins that ship inside the core and register like third-party ones."""
