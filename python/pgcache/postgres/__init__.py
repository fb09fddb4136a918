"""PostgreSQL: connection pools, features from ``pg_stat_statements`` (plain and cached), and
the private server and workload used by the demo, the tests and the benchmarks.
Needs ``pgcache[postgres]``."""

from pgcache._extras import require

require("postgres", "pgcache.postgres")
