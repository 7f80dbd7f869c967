"""The Redis key schema and symbol validation (SPEC §2).

=====================  =======  ====================
key                    channel  default TTL
=====================  =======  ====================
``stock:agg1m:{S}``    AM       120 s
``stock:fmv:{S}``      FMV      60 s
``stock:trade:{S}``    T        60 s
``stock:quote:{S}``    Q        60 s
=====================  =======  ====================

``{S}`` is the symbol exactly as Polygon sends it (``BRK.B``, ``AMpB``): never upper-cased,
never split. A symbol is valid when it has 1 to 32 characters and holds no whitespace, no
control character and none of ``* ? [ ] { } :`` (glob and key-separator characters that
would make keys ambiguous or unsafe for ``SCAN``/``KEYS`` patterns).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from polygon_core.events import Channel

__all__ = [
    "KEY_PREFIXES",
    "LEADER_KEY",
    "MAX_SYMBOL_LENGTH",
    "TEST_KEY",
    "TtlPolicy",
    "is_valid_symbol",
    "key_for",
]

MAX_SYMBOL_LENGTH = 32
TEST_KEY = "stock:test"
"""A key the service writes outside the schema: the Redis check's probe."""
LEADER_KEY = "polygon-sink:leader"
"""The leader lease (``HA_ENABLED``): the one key outside the four families the service
keeps; its value is the holder's random owner id."""

KEY_PREFIXES: dict[Channel, str] = {
    Channel.AM: "stock:agg1m:",
    Channel.FMV: "stock:fmv:",
    Channel.T: "stock:trade:",
    Channel.Q: "stock:quote:",
}

# \s covers Unicode whitespace; \x00-\x1f and \x7f-\x9f are the C0/C1 control characters.
_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f-\x9f*?\[\]{}:]")


def is_valid_symbol(symbol: str) -> bool:
    """True when ``symbol`` may appear in a key (see the module docstring)."""
    return 0 < len(symbol) <= MAX_SYMBOL_LENGTH and _FORBIDDEN.search(symbol) is None


def key_for(channel: Channel, symbol: str) -> str:
    """The Redis key for ``channel`` and ``symbol``, e.g. ``stock:quote:AAPL``.

    Raises ``ValueError`` for an invalid symbol; the hot path validates once at decode time
    and uses :attr:`KEY_PREFIXES` directly.
    """
    if not is_valid_symbol(symbol):
        raise ValueError(f"invalid symbol {symbol!r}")
    return KEY_PREFIXES[channel] + symbol


@dataclass(frozen=True, slots=True)
class TtlPolicy:
    """Seconds each key type lives after its last write (``*_TTL_SEC`` settings)."""

    agg1m_s: int = 120
    fmv_s: int = 60
    trade_s: int = 60
    quote_s: int = 60

    def __post_init__(self) -> None:
        for name in ("agg1m_s", "fmv_s", "trade_s", "quote_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TTL {name} must be a positive number of seconds")

    def for_channel(self, channel: Channel) -> int:
        """The TTL in seconds for keys of ``channel``."""
        if channel is Channel.AM:
            return self.agg1m_s
        if channel is Channel.FMV:
            return self.fmv_s
        if channel is Channel.T:
            return self.trade_s
        return self.quote_s
