"""Operator authentication: ``Authorization: Bearer <ADMIN_TOKEN>`` on the endpoints that change
what the service holds (cache invalidation and deletion).

Without ``ADMIN_TOKEN`` those endpoints answer 403 saying how to enable them; without a bearer
token, 401 with ``WWW-Authenticate``; with another token, 403. Tokens are compared in constant
time (digests of both, so not even the length leaks). Reading endpoints need no token. This
module does no rate limiting of failed attempts (the rate limiter covers every endpoint).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from pydantic import SecretStr
from starlette.requests import Request

from pgcache.service.problems import ProblemError

CHALLENGE: Final = 'Bearer realm="pgcache operator endpoints"'


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, ``None`` without one."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_admin(request: Request, admin_token: SecretStr | None) -> None:
    """Return if ``request`` carries ``admin_token`` as its bearer token; raise the 401 or 403
    problem otherwise."""
    if admin_token is None:
        raise ProblemError(
            403,
            "admin_disabled",
            "operator endpoints are disabled: set ADMIN_TOKEN (16 to 256 printable characters) "
            "and send it as Authorization: Bearer <token>",
        )
    presented = bearer_token(request)
    if presented is None:
        raise ProblemError(
            401,
            "unauthorized",
            "this endpoint needs Authorization: Bearer <ADMIN_TOKEN>",
            {"WWW-Authenticate": CHALLENGE},
        )
    if not hmac.compare_digest(_digest(presented), _digest(admin_token.get_secret_value())):
        raise ProblemError(403, "forbidden", "the bearer token is not this service's ADMIN_TOKEN")
