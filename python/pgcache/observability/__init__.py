"""Metrics of the caches, pools and clients: the JSON snapshot and the Prometheus collector.
Needs ``pgcache[metrics]``."""

from pgcache._extras import require

require("metrics", "pgcache.observability")
