"""Bounds on what a client may send: body size, JSON depth, the strings that become cache keys.

Every bound answers with a JSON problem (:class:`pgcache.service.problems.ProblemError`): 413 for
a body larger than ``MAX_BODY_BYTES`` (read no further than the limit, whether or not the client
declared a ``Content-Length``), 422 for JSON nested deeper than :data:`MAX_JSON_DEPTH` (checked
before parsing: a recursive parser would overflow) and for a ``scenario`` or ``model_id`` outside
:data:`IDENTIFIER_PATTERN`. The route functions call these; nothing here is middleware, so the
bounds hold wherever :func:`pgcache.service.routes.pgcache_routes` are mounted.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any, Final

from starlette.requests import Request

from pgcache.service.problems import ProblemError

MAX_JSON_DEPTH: Final = 32
"""The deepest nesting of arrays and objects a request body may have."""

MAX_IDENTIFIER_LENGTH: Final = 64
IDENTIFIER_PATTERN: Final = rf"^[A-Za-z0-9][A-Za-z0-9._:/-]{{0,{MAX_IDENTIFIER_LENGTH - 1}}}$"
"""``scenario`` and ``model_id``: 1 to 64 letters, digits, ``.``, ``_``, ``:``, ``/`` or ``-``,
beginning with a letter or digit. They become parts of cache keys: their length bounds what one
entry costs, their character set keeps them out of log lines' way."""

_IDENTIFIER_RE: Final = re.compile(IDENTIFIER_PATTERN)
# A string, or an unterminated one to the end: never backtracks (linear on hostile input).
_JSON_STRING_RE: Final = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)')
_NOT_BRACKET_RE: Final = re.compile(rb"[^\[\]{}]+")
_SHOWN: Final = 80


def check_identifier(name: str, value: str) -> str:
    """``value`` if it matches :data:`IDENTIFIER_PATTERN`; a 422 problem naming ``name``."""
    if _IDENTIFIER_RE.fullmatch(value):
        return value
    shown = value if len(value) <= _SHOWN else f"{value[:_SHOWN]}... ({len(value)} characters)"
    raise ProblemError(
        422,
        f"invalid_{name}",
        f"{name}={shown!r}: expected 1 to {MAX_IDENTIFIER_LENGTH} letters, digits, '.', '_', "
        "':', '/' or '-', beginning with a letter or digit, e.g. current",
    )


def _too_large(max_bytes: int) -> ProblemError:
    # Connection: close, or the server would keep reading (and dropping) the rest of the body.
    return ProblemError(
        413,
        "body_too_large",
        f"the request body is larger than {max_bytes} bytes (MAX_BODY_BYTES)",
        {"Connection": "close"},
    )


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, read no further than ``max_bytes``; 413 beyond (a ``Content-Length``
    above the limit is refused before anything is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings ignored;
    for text that is not JSON, a number that means nothing)."""
    brackets = _NOT_BRACKET_RE.sub(b"", _JSON_STRING_RE.sub(b"", raw))
    if not brackets:
        return 0
    return max(accumulate(1 if byte in b"[{" else -1 for byte in brackets))


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``raw`` parsed as JSON; a 422 problem when it is not JSON or nests deeper than
    ``max_depth``."""
    if json_depth(raw) > max_depth:
        raise ProblemError(
            422,
            "invalid_body",
            f"the body nests arrays and objects deeper than {max_depth} levels",
        )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ProblemError(422, "invalid_body", f"the body is not valid JSON: {exc}") from None
