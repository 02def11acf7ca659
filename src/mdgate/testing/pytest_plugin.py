"""pytest plugin: shared fixtures for mdgate and provider plugins."""
