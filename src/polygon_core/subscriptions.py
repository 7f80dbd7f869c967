"""Which topics a connection subscribes to, and the control frames that say so.

Rules (``polygon-protocol.md`` §1.2, §2, §6, §9; SPEC §4):

* Host roles: the real-time host serves ``AM`` and ``FMV``; the delayed host serves ``T``
  and ``Q`` (SPEC §1). Each symbol is expanded to its host's channels, ``AM.AAPL,FMV.AAPL``.
* A topic is ``<CHANNEL>.<TICKER>``; several topics are comma-joined in one ``params``
  string, with no spaces (§6: the staging quickstart's ``"AM.AAPL, AM.MSFT"`` is not copied).
* ``<CHANNEL>.*`` is the wildcard; it is acknowledged like any other topic (§6).
  ``POLYGON_WS_SYMBOLS=*`` selects it (SPEC §4).
* Tickers are case-sensitive and may hold dots: ``BRK.B``, ``AMpB`` (§9). Symbols are never
  upper-cased or stripped of dots, and a topic splits at its *first* dot only (``T.BRK.B`` is
  channel ``T``, ticker ``BRK.B``; client-python PR #567).
* No limit on topics per frame is documented for stocks; batching at most
  ``POLYGON_SUBSCRIBE_BATCH`` *symbols* per frame is a defensive choice (§6, SPEC §4).
* Control frames are bare JSON objects: ``{"action":"auth","params":"KEY"}`` and
  ``{"action":"subscribe","params":"AM.AAPL,FMV.AAPL"}`` (§2). They are encoded with msgspec,
  so any character in the key or a symbol is escaped correctly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import msgspec

from polygon_core.events import Channel
from polygon_core.keys import is_valid_symbol

__all__ = [
    "DELAYED_CHANNELS",
    "REALTIME_CHANNELS",
    "WILDCARD",
    "FeedRole",
    "SymbolSelection",
    "auth_message",
    "parse_symbols",
    "split_topic",
    "subscribe_message",
    "subscribe_params",
    "subscription_topics",
]

WILDCARD = "*"
REALTIME_CHANNELS: tuple[Channel, ...] = (Channel.AM, Channel.FMV)
"""Channels of the real-time host (``POLYGON_WS_HOST_REALTIME``)."""
DELAYED_CHANNELS: tuple[Channel, ...] = (Channel.T, Channel.Q)
"""Channels of the delayed host (``POLYGON_WS_HOST_DELAYED``)."""


class FeedRole(StrEnum):
    """The two connections polygon-sink keeps, one per host."""

    REALTIME = "realtime"
    DELAYED = "delayed"

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The channels this host serves, in subscription order."""
        return REALTIME_CHANNELS if self is FeedRole.REALTIME else DELAYED_CHANNELS


@dataclass(frozen=True, slots=True)
class SymbolSelection:
    """What to subscribe: every ticker (``wildcard``) or the listed ``symbols``.

    ``symbols`` keeps the explicit symbols even in wildcard mode (``AAPL,*``), in order and
    without duplicates; subscribing ignores them when ``wildcard`` is set.
    """

    wildcard: bool
    symbols: tuple[str, ...]

    @classmethod
    def of(cls, symbols: Iterable[str]) -> SymbolSelection:
        """A selection from already split symbols (``*`` among them means wildcard).

        Raises ``ValueError`` naming every invalid symbol (see :func:`_check`).
        """
        if isinstance(symbols, str):
            raise TypeError("pass an iterable of symbols, not a string (see parse_symbols)")
        wildcard = False
        unique: dict[str, None] = {}
        for symbol in symbols:
            if symbol == WILDCARD:
                wildcard = True
            else:
                unique.setdefault(symbol, None)
        _check(unique)
        return cls(wildcard, tuple(unique))

    def with_symbols(self, more: Iterable[str]) -> SymbolSelection:
        """This selection plus ``more`` (e.g. discovered tickers), still deduplicated."""
        extra = SymbolSelection.of(more)
        merged = dict.fromkeys((*self.symbols, *extra.symbols))
        return SymbolSelection(self.wildcard or extra.wildcard, tuple(merged))

    def __bool__(self) -> bool:
        """True when there is anything to subscribe."""
        return self.wildcard or bool(self.symbols)


def _check(symbols: Iterable[str]) -> None:
    """Raise ``ValueError`` naming every symbol that cannot appear in a topic or a key.

    Valid means :func:`polygon_core.keys.is_valid_symbol` and no comma (the topic separator).
    """
    bad = [s for s in symbols if "," in s or not is_valid_symbol(s)]
    if bad:
        shown = ", ".join(repr(s) for s in bad[:20])
        more = f" and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(f"invalid symbol(s): {shown}{more}")


def parse_symbols(text: str) -> SymbolSelection:
    """Parse ``POLYGON_WS_SYMBOLS``: comma-separated, case and dots kept exactly.

    Whitespace around items is stripped, empty items are dropped, duplicates keep their first
    position, and an item ``*`` anywhere selects the wildcard. An empty value gives an empty
    selection (ticker discovery may still add symbols). Raises ``ValueError`` naming every
    invalid symbol (e.g. ``AA PL``, ``A:B``, ``A*``).
    """
    return SymbolSelection.of(item for raw in text.split(",") if (item := raw.strip()))


def _prepare(
    channels: Sequence[Channel], symbols: SymbolSelection | Iterable[str]
) -> tuple[list[str], SymbolSelection]:
    if not channels:
        raise ValueError("no channels to subscribe")
    selection = symbols if isinstance(symbols, SymbolSelection) else SymbolSelection.of(symbols)
    return [f"{Channel(c).value}." for c in dict.fromkeys(channels)], selection


def subscription_topics(
    channels: Sequence[Channel], symbols: SymbolSelection | Iterable[str]
) -> list[str]:
    """Every topic once, in subscription order: each symbol expanded to ``channels``.

    ``AM.AAPL, FMV.AAPL, AM.MSFT, ...``; wildcard mode gives ``<CHANNEL>.*`` per channel.
    """
    prefixes, selection = _prepare(channels, symbols)
    if selection.wildcard:
        return [p + WILDCARD for p in prefixes]
    return [p + s for s in selection.symbols for p in prefixes]


def subscribe_params(
    channels: Sequence[Channel], symbols: SymbolSelection | Iterable[str], batch_size: int
) -> list[str]:
    """The ``params`` strings of the subscribe frames, in order.

    At most ``batch_size`` symbols per frame, each expanded to every channel in ``channels``
    (so a frame holds up to ``batch_size * len(channels)`` topics), comma-joined without
    spaces; every topic appears exactly once overall. Wildcard mode gives one frame
    ``AM.*,FMV.*``. No symbols give no frames.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    prefixes, selection = _prepare(channels, symbols)
    if selection.wildcard:
        return [",".join(p + WILDCARD for p in prefixes)]
    names = selection.symbols
    return [
        ",".join(p + s for s in names[start : start + batch_size] for p in prefixes)
        for start in range(0, len(names), batch_size)
    ]


class _Action(msgspec.Struct, frozen=True):
    action: str
    params: str


_encode = msgspec.json.Encoder().encode


def subscribe_message(params: str) -> bytes:
    """``{"action":"subscribe","params":"..."}`` as compact JSON bytes."""
    return _encode(_Action("subscribe", params))


def auth_message(api_key: str) -> bytes:
    """``{"action":"auth","params":"KEY"}`` as compact JSON bytes. Never log the result."""
    return _encode(_Action("auth", api_key))


def split_topic(topic: str) -> tuple[str, str]:
    """Split ``<CHANNEL>.<TICKER>`` at the first dot only: ``T.BRK.B`` → ``("T", "BRK.B")``.

    The channel is returned as a string (the server may name channels polygon-sink does not
    subscribe). Raises ``ValueError`` when there is no dot or either side is empty.
    """
    channel, dot, ticker = topic.partition(".")
    if not dot or not channel or not ticker:
        raise ValueError(f"not a topic: {topic!r}")
    return channel, ticker
