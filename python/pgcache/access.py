"""Who may do what, how often: the syntax of ``RATE_LIMIT``, ``TRUSTED_PROXIES`` and
``ADMIN_TOKEN``, checked with the standard library only.

:mod:`pgcache.config` reads these settings through :func:`check_access_setting`; the service
applies them (:mod:`pgcache.service.ratelimit`, :mod:`pgcache.service.auth`). Nothing here
limits or authenticates anything.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RATE_LIMIT_HINT: Final = "expected requests per second, minute or hour like 100/s or 6000/m"
ADMIN_TOKEN_HINT: Final = (
    "expected 16 to 256 printable ASCII characters without spaces, e.g. the output of "
    "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)
_RATE_UNITS: Final = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE_LIMIT_RE: Final = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*")
_ADMIN_TOKEN_RE: Final = re.compile(r"[\x21-\x7e]{16,256}")


def parse_rate_limit(value: str) -> float:
    """Requests per second from ``N/s``, ``N/m`` or ``N/h`` (``100/s``, ``6000/m``);
    ``ValueError`` for anything else or a rate of zero."""
    match = _RATE_LIMIT_RE.fullmatch(value)
    if match is None or float(match[1]) <= 0:
        raise ValueError(RATE_LIMIT_HINT)
    return float(match[1]) / _RATE_UNITS[match[2]]


def parse_trusted_proxies(value: str) -> tuple[Network, ...]:
    """Networks from addresses or CIDR blocks separated by commas (an address is a /32 or /128
    network); ``ValueError`` naming the first item that is neither."""
    networks = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an IP address or network; expected addresses or CIDR blocks "
                "separated by commas, like 10.0.0.0/8,127.0.0.1"
            ) from None
    return tuple(networks)


def check_access_setting(name: str, value: object) -> str:
    """The canonical text of setting ``name`` (``rate_limit``, ``trusted_proxies`` or
    ``admin_token``); ``ValueError`` with what is accepted (never echoing a token)."""
    if name == "admin_token":
        if not isinstance(value, str) or not _ADMIN_TOKEN_RE.fullmatch(value):
            raise ValueError(ADMIN_TOKEN_HINT)
        return value
    if not isinstance(value, str):
        raise ValueError(RATE_LIMIT_HINT if name == "rate_limit" else "expected a str")
    if name == "rate_limit":
        parse_rate_limit(value)
        return "".join(value.split())
    if name == "trusted_proxies":
        return ",".join(str(network) for network in parse_trusted_proxies(value))
    raise ValueError(f"{name!r} is not an access setting")
