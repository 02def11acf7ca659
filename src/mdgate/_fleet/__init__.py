"""
Several mdgate instances on one universe: ``mdgate run --role ingest|fanout|all``.

* :mod:`~mdgate._fleet.shards`: which connection slot (and feed partition) an instrument belongs to;
* :mod:`~mdgate._fleet.slots`: the ingest instance's gate on its provider connections (a
  connection runs only while its slot's lease is held);
* :mod:`~mdgate._fleet.leases`: the slot leases in PostgreSQL, with fencing tokens;
* :mod:`~mdgate._fleet.demand`: the demand registry (what the fan-out tier's clients want);
* :mod:`~mdgate._fleet.ingest` and :mod:`~mdgate._fleet.fanout`: the two roles.

See docs/scaling.md.
"""
