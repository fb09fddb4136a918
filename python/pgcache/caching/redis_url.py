"""``REDIS_URL``: the schemes pgcache accepts (one for a Redis Cluster), its check, and its
password masked for logs and status pages. No third-party import: the configuration checks the
URL without redis-py installed."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import urlsplit, urlunsplit

SCHEMES: Final = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
"""The URL schemes of ``REDIS_URL``; ``+cluster`` means a Redis Cluster."""


_PASSWORD_PARAMETER: Final = re.compile(r"(?i)([?&]password=)([^&#]*)")


def mask_redis_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, in the authority
    (``redis://:***@host:6379/0``) and in a ``password`` query parameter."""
    url = _PASSWORD_PARAMETER.sub(lambda match: match[1] + "***", url)
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def check_redis_url(url: object) -> tuple[str, bool]:
    """``(URL for redis-py, whether it names a cluster)`` of a ``REDIS_URL``; ``ValueError``
    naming the problem (the password masked)."""
    hint = f"expected a URL with scheme {', '.join(s + '://' for s in SCHEMES)}"
    if not isinstance(url, str):
        raise TypeError(f"url={url!r}: {hint}")
    shown = repr(mask_redis_url(url))
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # a port that is not a number raises ValueError
    except ValueError as exc:
        raise ValueError(f"url={shown}: {exc}; {hint}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"url={shown}: {hint}")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError(f"url={shown}: a unix:// URL needs a socket path")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"url={shown}: no host; {hint}")
    cluster = parts.scheme.endswith("+cluster")
    return urlunsplit(parts._replace(scheme=parts.scheme.removesuffix("+cluster"))), cluster
