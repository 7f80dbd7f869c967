"""Health: the periodic JSON health line, ``/healthz`` and Prometheus ``/metrics``.

Figures are read from the counters the ingest, the feeds and the archive keep anyway, at log
or scrape time, so nothing is added to the per-event path. The one exception is the flush
latency histogram, observed once per flush through the ingest's ``flush_observer`` hook.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_core.errors import PolygonIngestError
from polygon_core.events import Channel
from polygon_core.ingest import Ingest
from polygon_core.ports import Clock
from polygon_core.timestamps import to_epoch_ms
from polygon_runner.health_figures import (
    archive_degraded,
    archive_figures,
    leader_figures,
    node_resets,
)

__all__ = ["HealthPortUnavailable", "HealthReport", "HealthServer", "Metrics", "MetricsCollector"]


class HealthPortUnavailable(PolygonIngestError):
    """``HEALTH_PORT`` is taken (or not ours to bind): the service cannot start."""


STORE_STALE_S = 60.0
AM_BAR_MS = 60_000


class HealthReport:
    """Snapshots of the whole service's state."""

    def __init__(
        self,
        ingest: Ingest,
        feeds: Sequence[PolygonWebSocketFeed],
        archive: Any,
        clock: Clock,
        store: Any = None,
        leadership: Any = None,
    ) -> None:
        self.ingest = ingest
        self.leadership = leadership
        """``HA_ENABLED``: the service's :class:`~polygon_runner.leadership.Leadership`."""
        self.feeds = feeds
        self.archive = archive
        self.store = store
        """The store, for its node resets (a Redis store's ``stats.resets_by_reason``)."""
        self._clock = clock
        self._last_events: dict[Channel, int] = {}
        self._last_time = time.monotonic()

    def lag_ms(self) -> dict[str, float | None]:
        """Now minus the newest event time, per channel (ms; ``None`` before any event).

        For ``AM`` the event time is the bar's start, so its lag is taken from the bar's
        end (start + 60 s): a bar cannot be sent before its minute is over.
        """
        now = self._clock.time_ms()
        newest = self.ingest.newest_event_time
        lags: dict[str, float | None] = {}
        for c in Channel:
            if c not in newest:
                lags[c.value] = None
                continue
            t = to_epoch_ms(newest[c]) + (AM_BAR_MS if c is Channel.AM else 0)
            lags[c.value] = round(now - t, 1)
        return lags

    def leader(self) -> dict[str, Any] | None:
        """The leader lease's figures (None without ``HA_ENABLED``)."""
        return leader_figures(self.leadership, self._clock.monotonic_s())

    def store_ok(self) -> tuple[bool, str]:
        stats = self.ingest.stats
        if stats.in_outage:
            return False, "the store is failing (retrying with backoff)"
        last = stats.last_success_monotonic
        if len(self.ingest.buffer) and (
            last is None or self._clock.monotonic_s() - last > STORE_STALE_S
        ):
            return False, "values are waiting and the store has not answered recently"
        return True, "ok"

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        """Healthy when both feeds are authenticated and the store keeps up. The archive is
        the cold path: a degraded archive is reported (``archive``, ``degraded``) but keeps
        ``ok`` true, so an orchestrator does not replace a task whose Redis path works."""
        reasons: list[str] = []
        leader = self.leader()
        standby = leader is not None and leader["role"] == "standby"
        for feed in () if standby else self.feeds:  # a standby opens no feed
            if not feed.stats.authenticated:
                reasons.append(f"{feed.role.value} feed is {feed.stats.state}")
        ok, why = self.store_ok()
        if not ok:
            reasons.append(why)
        if leader is not None and not leader["store_answers"]:
            reasons.append("the store has not answered a leader-lease request recently")
        body: dict[str, Any] = {"ok": not reasons, "reasons": reasons}
        if leader is not None:
            body["role"] = leader["role"]
        if self.archive is not None:
            degraded = archive_degraded(archive_figures(self.archive))
            body["archive"] = "degraded" if degraded else "ok"
            body["degraded"] = degraded
        return not reasons, body

    def snapshot(self, delta: bool = False) -> dict[str, Any]:
        ingest = self.ingest
        events = dict(ingest.events_by_channel)
        item: dict[str, Any] = {
            "feeds": {
                f.role.value: {
                    "state": f.stats.state,
                    "connects": f.stats.connects,
                    "disconnects": dict(f.stats.disconnects),
                    "last_frame_ms": f.stats.last_frame_ms,
                    "acked_topics": f.stats.acked_topics,
                    "topics": f.stats.topics,
                    "rejects": dict(f.stats.rejects_by_reason),
                }
                for f in self.feeds
            },
            "events": {c.value: events.get(c, 0) for c in Channel},
            "rejects": dict(ingest.rejects_by_reason),
            "late_dropped": ingest.buffer.late_dropped,
            "conflated": ingest.buffer.superseded,
            "pending_keys": len(ingest.buffer),
            "writes": ingest.stats.values_written,
            "flushes": ingest.stats.flushes,
            "failed_flushes": ingest.stats.failed_flushes,
            "store_outage": ingest.stats.in_outage,
            "held_expired": ingest.stats.held_expired,
            "redis_node_resets": node_resets(self.store),
            "lag_ms": self.lag_ms(),
        }
        leader = self.leader()
        if leader is not None:
            item["leader"] = leader
        if delta:
            now = time.monotonic()
            elapsed = max(now - self._last_time, 1e-9)
            item["events_since_last"] = {
                c.value: events.get(c, 0) - self._last_events.get(c, 0) for c in Channel
            }
            item["events_per_s"] = round(sum(item["events_since_last"].values()) / elapsed, 1)
            self._last_events, self._last_time = events, now
        if self.archive is not None:
            item["archive"] = archive_figures(self.archive)
        return item

    def summary_line(self) -> str:
        s = self.snapshot()
        return (
            f"events {sum(s['events'].values())}, writes {s['writes']}, "
            f"late dropped {s['late_dropped']}, rejects {sum(s['rejects'].values())}"
        )


class MetricsCollector(Collector):
    """Prometheus metrics read from the live counters at scrape time."""

    def __init__(self, report: HealthReport) -> None:
        self.report = report

    def collect(self) -> Iterator[Any]:
        r = self.report
        ingest = r.ingest
        events = CounterMetricFamily("polygon_events", "Events accepted", labels=["channel"])
        for channel in Channel:
            events.add_metric([channel.value], ingest.events_by_channel.get(channel, 0))
        yield events
        rejects = CounterMetricFamily("polygon_rejects", "Rejected elements", labels=["reason"])
        for reason, count in ingest.rejects_by_reason.items():
            rejects.add_metric([reason], count)
        yield rejects
        yield CounterMetricFamily(
            "polygon_late_dropped", "Late events dropped", value=ingest.buffer.late_dropped
        )
        yield CounterMetricFamily(
            "polygon_conflated", "Writes saved by conflation", value=ingest.buffer.superseded
        )
        yield CounterMetricFamily(
            "polygon_redis_writes", "Values written", value=ingest.stats.values_written
        )
        yield CounterMetricFamily(
            "polygon_redis_flush_failures", "Failed flushes", value=ingest.stats.failed_flushes
        )
        resets = CounterMetricFamily(
            "polygon_redis_node_resets",
            "Times the Redis store dropped its connections to leave a node",
            labels=["reason"],
        )
        for reason, count in node_resets(r.store).items():
            resets.add_metric([reason], count)
        yield resets
        yield GaugeMetricFamily("polygon_pending_keys", "Keys waiting", value=len(ingest.buffer))
        yield CounterMetricFamily(
            "polygon_held_expired",
            "Values held across a standby period and dropped, older than their TTL (HA)",
            value=ingest.stats.held_expired,
        )
        leader = r.leader()
        yield GaugeMetricFamily(
            "polygon_sink_leader",
            "1 while this task holds the leader lease (always 1 without HA_ENABLED)",
            value=1.0 if leader is None or leader["role"] == "active" else 0.0,
        )
        lag = GaugeMetricFamily("polygon_lag_seconds", "Now minus newest event", labels=["channel"])
        for name, value in r.lag_ms().items():
            if value is not None:
                lag.add_metric([name], value / 1000.0)
        yield lag
        up = GaugeMetricFamily("polygon_feed_up", "Feed authenticated", labels=["feed"])
        reconnects = CounterMetricFamily(
            "polygon_feed_disconnects", "Disconnects", labels=["feed", "reason"]
        )
        frames = CounterMetricFamily("polygon_feed_frames", "Frames read", labels=["feed"])
        for feed in r.feeds:
            up.add_metric([feed.role.value], 1.0 if feed.stats.authenticated else 0.0)
            frames.add_metric([feed.role.value], feed.stats.frames)
            for reason, count in feed.stats.disconnects.items():
                reconnects.add_metric([feed.role.value, reason], count)
        yield up
        yield reconnects
        yield frames
        if r.archive is not None:
            for name, value in archive_figures(r.archive).items():
                if isinstance(value, dict):
                    family = GaugeMetricFamily(
                        f"polygon_archive_{name}", f"Archive {name}", labels=["channel"]
                    )
                    for channel, count in value.items():
                        family.add_metric([channel], count)
                    yield family
                elif isinstance(value, int | float):
                    yield GaugeMetricFamily(
                        f"polygon_archive_{name}", f"Archive {name}", value=float(value)
                    )


class Metrics:
    """The Prometheus registry: live collectors plus the flush-latency histogram."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.flush_seconds = Histogram(
            "polygon_redis_flush_seconds",
            "Time to write one batch",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )

    def observe_flush(self, seconds: float, values: int) -> None:
        self.flush_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """``/healthz`` and ``/metrics`` on ``HEALTH_PORT`` (aiohttp)."""

    def __init__(
        self, report: HealthReport, metrics: Metrics, port: int, host: str = "0.0.0.0"
    ) -> None:
        self.report = report
        self.metrics = metrics
        metrics.registry.register(MetricsCollector(report))
        self._port = port
        self._host = host
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise HealthPortUnavailable(
                f"HEALTH_PORT {self._port} cannot be bound on {self._host or '*'}: {why}"
            ) from None
        bound = self._runner.addresses
        self.port = bound[0][1] if bound else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        ok, body = self.report.healthy()
        return web.json_response(body, status=200 if ok else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain")
