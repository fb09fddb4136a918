"""The Lua scripts of the shared tier and the pipelines that carry them: each does in one round
trip (and atomically, on the server) what the tier must not split: read an entry with what it
has left to live, write an entry and index it by query, invalidate a query, release a lock only
when it is still ours. No third-party import: these are strings and two pipeline builders.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Final

# GET and PTTL in one round trip: the L1 copy of an entry must not outlive it.
READ: Final = "return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}"
# SET PX, and remember the entry in its query's index (same hash tag: same cluster slot).
WRITE_INDEXED: Final = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
"""
DELETE_QUERY: Final = """
local entries = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for _, entry in ipairs(entries) do removed = removed + redis.call('DEL', entry) end
redis.call('DEL', KEYS[1])
return removed
"""
UNLOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def queue_commands(client: Any, commands: Sequence[tuple[Any, ...]]) -> Any:
    """A pipeline (no transaction: one round trip per cluster node) holding ``commands``."""
    pipeline = client.pipeline(transaction=False)
    for command in commands:
        pipeline.execute_command(*command)
    return pipeline


def queue_reads(client: Any, entries: Sequence[str]) -> Any:
    """A pipeline holding :data:`READ` of each entry (``execute_command``: a cluster pipeline
    has no ``eval()``)."""
    pipeline = client.pipeline(transaction=False)
    for entry in entries:
        pipeline.execute_command("EVAL", READ, 1, entry)
    return pipeline


async def as_int(reply: Awaitable[Any]) -> int:
    """``int(await reply)``: one lambda shape for the sync and the asyncio client."""
    return int(await reply)
