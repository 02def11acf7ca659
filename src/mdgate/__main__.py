"""``python -m mdgate`` runs the command line."""

from mdgate.cli import main

raise SystemExit(main())
