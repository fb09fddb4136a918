"""The HTTP service: application and lifespan, middleware, JSON errors, API routes, serving.
Needs ``pgcache[service]``."""

from pgcache._extras import require

require("service", "pgcache.service")
