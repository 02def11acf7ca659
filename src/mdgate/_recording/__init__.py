"""Recording raw provider frames (``mdgate record``) and playing them back (``mdgate replay``, ``demo``)."""
