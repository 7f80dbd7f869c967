"""The leader lease and the fenced, latest-wins writes as Lua scripts (Redis, Redis Cluster,
Upstash: the same text everywhere), and the fence a store consults before each batch.

* acquire: ``SET polygon-sink:leader <owner> NX PX <ttl>`` (no script);
* :data:`RENEW`: ``PEXPIRE`` only if the key still holds our owner id (compare-and-set);
* :data:`RELEASE`: ``DEL`` only if it still holds our owner id (compare-and-delete);
* :data:`FENCED_SETS`: one script per batch (or chunk): nothing is written unless the lease
  key holds our owner id; then each key is ``SET ... EX`` only if the stored record's event
  time (``"ts"``, or ``"start"`` for agg1m) is not newer than the new one's (older, for a
  value ``strictly_newer``: its event time goes as a negative number). Returns the number
  of values written, or -1 when the lease is not ours.
* :data:`LATEST_WINS_SET`: the per-key part alone (Redis Cluster: a batch's keys live in
  many slots and the lease key in its own, so a script cannot read both; there the fence
  is the task's own fencing deadline, checked before each batch).

A record's fields come from msgspec (SPEC §2): a symbol never holds ``:``, so ``"ts":``
and ``"start":`` only ever match the field itself.
"""

from __future__ import annotations

from collections.abc import Callable

from polygon_core.keys import LEADER_KEY
from polygon_core.ports import LatestValue

__all__ = [
    "FENCED_SETS",
    "LATEST_WINS_SET",
    "RELEASE",
    "RENEW",
    "Fence",
    "event_time_arg",
    "script_time",
]

RENEW = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

RELEASE = """\
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

_NEWER_OR_EQUAL = """\
local function stored_time(old)
  local t = string.match(old, '"ts":(%-?[%d%.eE%+%-]+)')
  if t == nil then t = string.match(old, '"start":(%-?[%d%.eE%+%-]+)') end
  return tonumber(t)
end
local function take(key, value, ttl, t)
  local n = tonumber(t)
  local strict = n < 0
  if strict then n = -n end
  local old = redis.call('GET', key)
  if old then
    local ot = stored_time(old)
    if ot ~= nil and (ot > n or (strict and ot == n)) then return 0 end
  end
  redis.call('SET', key, value, 'EX', ttl)
  return 1
end
"""

FENCED_SETS = (
    _NEWER_OR_EQUAL
    + """\
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local written = 0
for i = 2, #KEYS do
  local j = (i - 2) * 3 + 2
  written = written + take(KEYS[i], ARGV[j], ARGV[j + 1], ARGV[j + 2])
end
return written
"""
)
"""KEYS: the lease key, then the batch's keys; ARGV: owner id, then value, ttl, event time
per key."""

LATEST_WINS_SET = _NEWER_OR_EQUAL + "return take(KEYS[1], ARGV[1], ARGV[2], ARGV[3])\n"


def script_time(value: LatestValue) -> int | float:
    """``value``'s event time as the scripts take it: negative for a value to be written
    only over an older record (``LatestValue.strictly_newer``)."""
    return -value.event_time if value.strictly_newer else value.event_time


def event_time_arg(t: int | float) -> bytes:
    """An event time as a script argument Lua's ``tonumber`` reads back exactly."""
    return b"%d" % t if isinstance(t, int) or t.is_integer() else repr(t).encode()


class Fence:
    """What a store checks before a batch while ``HA_ENABLED``: the lease key, this task's
    owner id, ``holds()``, the task's own view (False from its fencing deadline on), and
    ``remaining_s()``, the time to that deadline: a write still in flight then is
    abandoned (its connection dropped), so a stalled write never outlives the term."""

    __slots__ = ("holds", "key", "owner", "remaining_s")

    def __init__(
        self,
        owner: str,
        holds: Callable[[], bool],
        remaining_s: Callable[[], float] = lambda: 3600.0,
        key: str = LEADER_KEY,
    ) -> None:
        self.owner = owner
        self.holds = holds
        self.remaining_s = remaining_s
        self.key = key
