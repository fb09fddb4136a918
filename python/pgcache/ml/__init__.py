"""The ML prediction service: answer models, retry policy, pooled clients, cached predictions
and a reference service to test against. Needs ``pgcache[ml]``."""

from pgcache._extras import require

require("ml", "pgcache.ml")
