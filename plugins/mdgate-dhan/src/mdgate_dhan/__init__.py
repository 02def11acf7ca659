"""Dhan provider plugin for mdgate."""
