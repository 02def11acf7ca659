"""Deliberately faulty mdgate plugins (mdgate's own tests only)."""
