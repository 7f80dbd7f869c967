"""Configuration of the local Polygon simulator, its command line, and scripted events."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from polygon_core.subscriptions import FeedRole
from polygon_sim.market import DEFAULT_MIX
from polygon_sim.session import SESSIONS, SessionClock
from polygon_sim.tickers import DEFAULT_SYMBOLS

__all__ = [
    "DEFAULT_START_MS",
    "AckStyle",
    "MarketKind",
    "ScriptItem",
    "ScriptedEvent",
    "SimulatorConfig",
    "config_from_args",
    "parse_script",
]

AckStyle = Literal["one_frame", "frame_per_topic"]
MarketKind = Literal["flat", "realistic"]
ScriptItem = Mapping[str, Any] | bytes
"""A scripted event: a mapping encoded as is, or the exact JSON bytes of one event object."""
DEFAULT_START_MS = 1_746_624_600_000
"""2025-05-07T13:30:00Z: where the synthetic clock starts unless ``start_ms`` says otherwise."""
_HOST_OF = {"AM": FeedRole.REALTIME, "FMV": FeedRole.REALTIME}
REALISTIC_RATE = 2000.0
"""The realistic market's default trades + quotes per second at midday (whole universe)."""


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    """Everything about the simulator that is fixed at start; faults are switched at runtime."""

    api_key: str = field(default="demo", repr=False)
    symbols: tuple[str, ...] = DEFAULT_SYMBOLS
    """The traded universe (case and dots kept). Subscriptions to other tickers are
    acknowledged and never produce data, as on the live feed."""
    events_per_second: float = 0.0
    """Per connection. 0: as fast as the client reads (``await send`` per frame)."""
    events_per_frame: int = 50
    """Data events per frame (fewer when paced slowly, at the ``max_events`` cap, or when a
    frame also carries statuses)."""
    max_frame_delay_s: float = 0.001
    """When paced: a frame goes out once ``events_per_frame`` events are due or once the
    oldest due event has waited this long, whichever comes first (0: at once)."""
    seed: int | None = None
    """Makes each host's event stream reproducible (with the synthetic clock)."""
    max_events: int | None = None
    """Total data events to deliver, all hosts and connections together; then silence."""
    ack_style: AckStyle = "one_frame"
    """``one_frame``: the acks of one subscribe share a frame; ``frame_per_topic``: one each."""
    pack_status_with_data: bool = True
    """With ``one_frame``, acks lead the next data frame when data is ready (status and data
    in one array, as the live feed may do)."""
    connected_status: str = "connected"
    """The first frame's ``status``; the spec's example says ``success``."""
    auth_timeout_s: float | None = 10.0
    """Close with ``auth_timeout`` when no auth frame came in time (``None``: never)."""
    evict: Literal["older", "newer"] = "older"
    """Which connection a second authenticated one on the same host and key evicts."""
    market: MarketKind = "flat"
    """``flat``: every subscribed (channel, symbol) alike, at ``events_per_second`` per
    connection or as fast as read (the benchmark's workloads). ``realistic``: the market of
    :mod:`polygon_sim.realistic` on the wall clock (skewed activity, one AM per symbol and
    minute, a session clock); ``events_per_second`` is then the trades plus quotes per second
    of the whole universe at midday (0: :data:`REALISTIC_RATE`), ``mix`` is not used."""
    session: str = "open"
    """Realistic market: the session it starts in (``overnight``, ``pre``, ``open``,
    ``midday``, ``close``, ``after``, or ``now`` for New York's real time)."""
    session_speed: float = 1.0
    """Realistic market: how many times faster than the wall clock the sessions pass."""
    session_origin_s: float | None = None
    """Realistic market: the wall-clock time (epoch s) at which ``session`` begins (earlier
    times fall in the sessions before it); ``None``: when the simulator starts. Two
    processes given the same origin, speed and seed run the same market (the benchmark)."""
    mix: tuple[tuple[str, float], ...] = DEFAULT_MIX
    """Relative channel weights (``T``:``Q`` and ``AM``:``FMV`` matter, per host)."""
    script: tuple[ScriptItem, ...] | None = None
    """Exact events to send instead of the synthetic market, in order, each to the host of
    its channel, once; an event nobody subscribes to when its turn comes is skipped."""
    track_latest: bool = False
    """Record the newest delivered event per (channel, symbol) in the truth (slower)."""
    wall_clock: bool | None = None
    """Event times from the wall clock (``t = max(now, previous + 1)`` per symbol), or from
    a synthetic clock starting at ``start_ms`` and advancing 1 ms per event. ``None``:
    synthetic when ``seed`` is set."""
    start_ms: int | None = None
    fmv_time_unit: Literal["ms", "ns"] = "ms"
    """FMV ``t`` in ms (what published examples show) or ns (what the docs say)."""
    host: str = "127.0.0.1"
    port_realtime: int = 0
    port_delayed: int = 0
    rest_port: int = 0
    rest: bool = True
    """Serve the tickers REST endpoint."""
    extra_tickers: int = 0
    """Made-up active tickers (``ZAAA``...) the REST endpoint lists beyond ``symbols``."""
    write_limit_bytes: int = 64 * 1024
    """High-water mark of each connection's write buffer (backpressure point)."""
    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    close_timeout_s: float = 2.0
    slow_consumer_lag_s: float | None = None
    """When paced, a client this many seconds behind gets ``slow_consumer`` (``None``: off)."""
    compression: bool = False
    """Offer permessage-deflate (off: the benchmark measures the sink, not zlib)."""
    frame_log: str | None = None
    """Benchmark only: number each data frame, stamp its events with the number and write
    each frame's send time to this path on stop (:mod:`polygon_sim.stamps`)."""

    def __post_init__(self) -> None:
        if self.events_per_frame < 1:
            raise ValueError("events_per_frame must be at least 1")
        if self.events_per_second < 0:
            raise ValueError("events_per_second must not be negative")
        if self.max_frame_delay_s < 0:
            raise ValueError("max_frame_delay_s must not be negative")
        if self.max_events is not None and self.max_events < 0:
            raise ValueError("max_events must not be negative")
        if self.ack_style not in ("one_frame", "frame_per_topic"):
            raise ValueError(f"unknown ack_style {self.ack_style!r}")
        if self.evict not in ("older", "newer"):
            raise ValueError(f"unknown evict policy {self.evict!r}")
        if self.market not in ("flat", "realistic"):
            raise ValueError(f"unknown market {self.market!r}")
        SessionClock(self.session, self.session_speed)  # raises on a bad session or speed
        unknown = {c for c, _ in self.mix} - {"AM", "FMV", "T", "Q"}
        if unknown:
            raise ValueError(f"unknown channel(s) in mix: {sorted(unknown)}")

    @property
    def synthetic_start_ms(self) -> int | None:
        """Where the synthetic clock starts, or ``None`` for the wall clock."""
        synthetic = (not self.wall_clock) if self.wall_clock is not None else self.seed is not None
        if not synthetic:
            return None
        return self.start_ms if self.start_ms is not None else DEFAULT_START_MS


@dataclass(frozen=True, slots=True)
class ScriptedEvent:
    channel: str
    symbol: str
    raw: bytes
    time: int


def parse_script(items: Sequence[ScriptItem]) -> dict[FeedRole, list[ScriptedEvent]]:
    """Split a script per host; ``ValueError`` for an item that is not one event of
    ``AM``/``FMV``/``T``/``Q`` with a string ``sym``."""
    encode, decode = msgspec.json.encode, msgspec.json.decode
    hosts: dict[FeedRole, list[ScriptedEvent]] = {role: [] for role in FeedRole}
    for position, item in enumerate(items):
        raw = bytes(item) if isinstance(item, bytes | bytearray) else encode(dict(item))
        event = decode(raw) if isinstance(item, bytes | bytearray) else item
        if not isinstance(event, Mapping):
            raise ValueError(f"script item {position} is not a JSON object")
        channel, symbol = event.get("ev"), event.get("sym")
        if channel not in ("AM", "FMV", "T", "Q") or not isinstance(symbol, str):
            raise ValueError(f"script item {position} needs ev AM/FMV/T/Q and a string sym")
        when = event.get("s" if channel == "AM" else "t", 0)
        when = when if isinstance(when, int) else 0
        role = _HOST_OF.get(channel, FeedRole.DELAYED)
        hosts[role].append(ScriptedEvent(channel, symbol, raw, when))
    return hosts


def config_from_args(
    argv: Sequence[str] | None = None, prog: str = "python -m polygon_sim"
) -> tuple[SimulatorConfig, float]:
    """The simulator's command-line options -> (config, stats interval in s).

    ``prog`` is the command the user typed (``polygon-sink simulate`` from the runner), so
    ``--help`` and errors name it.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local Polygon/Massive stocks feed: two WebSocket hosts and the "
        "tickers REST endpoint. The API key is read from --api-key or "
        "SIMULATOR_API_KEY / POLYGON_API_KEY (default 'demo'); it is never printed.",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    add("--port-realtime", type=int, default=0, help="AM+FMV host port (0: any free port)")
    add("--port-delayed", type=int, default=0, help="T+Q host port (0: any free port)")
    add("--rest-port", type=int, default=0, help="tickers REST port (0: any free port)")
    add("--no-rest", action="store_true", help="do not serve the REST endpoint")
    add("--api-key", default=None, help="the key clients must send")
    add("--symbols", default=None, help="comma-separated universe (default: a realistic list)")
    add(
        "--market",
        choices=["realistic", "flat"],
        default="realistic",
        help="realistic (default): skewed activity, one AM per symbol-minute, sessions; "
        "flat: every subscription alike at --rate per connection (the benchmark's)",
    )
    add(
        "--session",
        choices=[*SESSIONS, "now"],
        default="open",
        help="realistic: the session to start in (now: New York's time; default open)",
    )
    add("--speed", type=float, default=1.0, help="realistic: sessions pass N times faster")
    add(
        "--session-origin",
        type=float,
        default=None,
        metavar="EPOCH_S",
        help="realistic: wall-clock time (epoch s) at which --session begins (default: start)",
    )
    add(
        "--rate",
        type=float,
        default=0.0,
        help="flat: events/s per connection (0: as fast as read); realistic: trades+quotes/s "
        f"of the universe at midday (0: {REALISTIC_RATE:.0f})",
    )
    add("--events-per-frame", type=int, default=50)
    add(
        "--max-frame-delay",
        type=float,
        default=0.001,
        help="when paced, seconds the oldest due event may wait for a fuller frame",
    )
    add("--seed", type=int, default=None, help="reproducible events (synthetic clock)")
    add("--max-events", type=int, default=None, help="stop sending after this many events")
    add("--ack-style", choices=["one_frame", "frame_per_topic"], default="one_frame")
    add("--auth-timeout", type=float, default=10.0, help="seconds (0: no timeout)")
    add("--evict", choices=["older", "newer"], default="older")
    add("--extra-tickers", type=int, default=0, help="made-up tickers listed by REST")
    add("--slow-consumer-lag", type=float, default=None, help="seconds behind when paced")
    add("--fmv-time-unit", choices=["ms", "ns"], default="ms")
    add("--stats-interval", type=float, default=10.0, help="print totals every N s (0: never)")
    add(
        "--frame-log",
        default=None,
        help="benchmark: stamp events with their frame number (T size, Q bid size, FMV "
        "price) and write each frame's send time to this file on stop",
    )
    args = parser.parse_args(argv)
    key = args.api_key or os.environ.get("SIMULATOR_API_KEY") or os.environ.get("POLYGON_API_KEY")
    symbols = DEFAULT_SYMBOLS
    if args.symbols:
        symbols = tuple(dict.fromkeys(s.strip() for s in args.symbols.split(",") if s.strip()))
    config = SimulatorConfig(
        api_key=key or "demo",
        symbols=symbols,
        events_per_second=args.rate,
        market=args.market,
        session=args.session,
        session_speed=args.speed,
        session_origin_s=args.session_origin,
        events_per_frame=args.events_per_frame,
        max_frame_delay_s=args.max_frame_delay,
        seed=args.seed,
        max_events=args.max_events,
        ack_style=args.ack_style,
        auth_timeout_s=args.auth_timeout or None,
        evict=args.evict,
        host=args.host,
        port_realtime=args.port_realtime,
        port_delayed=args.port_delayed,
        rest_port=args.rest_port,
        rest=not args.no_rest,
        extra_tickers=args.extra_tickers,
        slow_consumer_lag_s=args.slow_consumer_lag,
        fmv_time_unit=args.fmv_time_unit,
        frame_log=args.frame_log,
    )
    return config, args.stats_interval
