"""Routing: the pure route table, the router, and subscription demand with failover."""
