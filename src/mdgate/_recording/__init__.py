"""Recording raw provider frames (``mdgate record``) and replaying them (``mdgate replay``, ``mdgate demo``)."""
