"""``python -m pgcache``: the ``pgcache`` command (see :mod:`pgcache.cli`)."""

from pgcache.cli import main

raise SystemExit(main())
