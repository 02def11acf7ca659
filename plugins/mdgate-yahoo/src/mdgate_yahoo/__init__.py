"""Yahoo provider plugin for mdgate."""
