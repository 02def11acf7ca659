"""``python -m mdgate`` runs the command line."""

from mdgate._cli import main

raise SystemExit(main())
