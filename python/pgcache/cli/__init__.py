"""The ``pgcache`` command: parser, serve, bench, demo. Needs ``pgcache[service]``."""

from pgcache._extras import require

require("service", "the pgcache command")

from pgcache.cli.parser import main  # noqa: E402 -- after the check, so it names the extra

__all__ = ["main"]
