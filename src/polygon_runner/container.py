"""The dependency-injector container: settings -> adapters -> use cases.

``Settings`` come in validated (see ``settings.py``). Resources open and close the clients;
the store is chosen by ``REDIS_URL``'s scheme with a ``Selector``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

from dependency_injector import containers, providers

from polygon_adapters.lease_scripts import Fence
from polygon_adapters.memory import InMemoryLatestStore
from polygon_adapters.polygon_ws import PolygonWebSocketFeed
from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_adapters.s3_archive import S3MultipartArchive
from polygon_adapters.s3_upload import open_s3_client
from polygon_adapters.upstash_store import UpstashLatestStore
from polygon_core.backoff import ReconnectPolicy
from polygon_core.ingest import Ingest
from polygon_core.ports import LatestStore
from polygon_core.rotation import RotationPolicy
from polygon_core.subscriptions import FeedRole
from polygon_runner.check_redis import ReadableStore
from polygon_runner.health import HealthReport, HealthServer, Metrics
from polygon_runner.leadership import Leadership
from polygon_runner.service import Service
from polygon_runner.settings import Settings, store_backend

__all__ = ["Container", "store_for"]


async def opened(store: LatestStore) -> AsyncIterator[LatestStore]:
    """Hand out the selected store and close it at shutdown."""
    try:
        yield store
    finally:
        await store.aclose()


async def s3_archive(
    settings: Settings, clock: SystemClock
) -> AsyncIterator[S3MultipartArchive | None]:
    """The S3 archive when S3_ENABLED=true (its run() recovers, then uploads; complete on
    close), else None."""
    if not settings.s3_enabled:
        yield None
        return
    async with open_s3_client(settings.aws_region, settings.s3_endpoint_url) as client:
        archive = S3MultipartArchive(
            client,
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            hostname=settings.hostname,
            policy=RotationPolicy.from_config(
                settings.s3_window_minutes,
                settings.s3_max_object_bytes,
                settings.s3_part_size_bytes,
            ),
            clock=clock,
            use_marker=settings.s3_use_marker,
            max_buffer_bytes=settings.s3_max_buffer_bytes,
            close_timeout_s=settings.shutdown_timeout_s,
            # HA: a predecessor may be completing its objects for its shutdown timeout
            recover_others_after_s=settings.shutdown_timeout_s if settings.ha_enabled else None,
        )
        try:  # recovery runs in the background (archive.run()): S3 never holds the start up
            yield archive
        finally:
            await archive.aclose()


def store_for(url: str, token: str) -> ReadableStore:
    """The store ``url`` selects by scheme (also used by ``check-redis``)."""
    backend = store_backend(url)
    if backend == "upstash":
        return UpstashLatestStore(url, token)
    if backend == "memory":
        return InMemoryLatestStore()
    return RedisLatestStore.from_url(url)


def leadership_for(settings: Settings, store: LatestStore, clock: SystemClock) -> Leadership | None:
    """With ``HA_ENABLED``: the lease on the store's own client, and the store fenced by it
    (every batch checks the lease); else None."""
    if not settings.ha_enabled:
        return None
    make_lease = getattr(store, "lease", None)
    if make_lease is None or not hasattr(store, "fence"):
        raise ValueError("HA_ENABLED needs a Redis or Upstash store")
    leadership = Leadership(make_lease(), clock, settings.ha_lease_ttl_ms)
    store.fence = Fence(leadership.owner, leadership.holds, leadership.remaining_s)
    return leadership


async def health_server(
    report: HealthReport, metrics: Metrics, port: int
) -> AsyncIterator[HealthServer | None]:
    if port == 0:
        yield None
        return
    server = HealthServer(report, metrics, port)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _feed(
    role: FeedRole, host: str, settings: Settings, clock: SystemClock
) -> PolygonWebSocketFeed:
    policy = ReconnectPolicy(
        initial_ms=settings.backoff_initial_ms,
        factor=settings.backoff_factor,
        max_ms=settings.backoff_max_ms,
        random=random.random,
    )
    return PolygonWebSocketFeed(
        role,
        host,
        settings.polygon_api_key,
        settings.symbols,
        policy=policy,
        clock=clock,
        batch_size=settings.subscribe_batch,
        keep_raw=settings.s3_enabled,
        max_frame_bytes=settings.ws_max_frame_bytes,
        idle_timeout_s=settings.ws_idle_timeout_s,
        debug=settings.ws_debug,
    )


class Container(containers.DeclarativeContainer):
    """settings -> adapters (store by REDIS_URL scheme, archive when enabled) -> use cases."""

    settings = providers.Dependency(instance_of=Settings)
    clock = providers.Singleton(SystemClock)
    scheduler = providers.Singleton(AsyncioScheduler)
    metrics = providers.Singleton(Metrics)

    store_backend = providers.Selector(
        settings.provided.store_backend,
        redis=providers.Factory(RedisLatestStore.from_url, settings.provided.redis_url),
        upstash=providers.Factory(
            UpstashLatestStore, settings.provided.redis_url, settings.provided.redis_token
        ),
        memory=providers.Factory(InMemoryLatestStore),
    )
    store = providers.Resource(opened, store_backend)
    archive = providers.Resource(s3_archive, settings, clock)
    ingest = providers.Singleton(
        Ingest,
        store=store,
        clock=clock,
        scheduler=scheduler,
        ttl=settings.provided.ttl,
        archive=archive,
        flush_interval_s=settings.provided.redis_flush_interval_s,
        log_writes=settings.provided.ws_debug,
        rng=providers.Object(random.random),
        flush_observer=metrics.provided.observe_flush,
    )
    feeds = providers.List(
        providers.Singleton(
            _feed, FeedRole.REALTIME, settings.provided.ws_host_realtime, settings, clock
        ),
        providers.Singleton(
            _feed, FeedRole.DELAYED, settings.provided.ws_host_delayed, settings, clock
        ),
    )
    leadership = providers.Singleton(leadership_for, settings, store, clock)
    report = providers.Singleton(
        HealthReport, ingest, feeds, archive, clock, store=store, leadership=leadership
    )
    health = providers.Resource(health_server, report, metrics, settings.provided.health_port)
    service = providers.Singleton(
        Service,
        ingest=ingest,
        feeds=feeds,
        report=report,
        symbols=settings.provided.symbols,
        discover=settings.provided.discover_tickers,
        rest_base=settings.provided.rest_base,
        api_key=settings.provided.polygon_api_key,
        ticker_limit=settings.provided.ticker_limit,
        health_interval_s=settings.provided.ws_health_interval_s,
        shutdown_timeout_s=settings.provided.shutdown_timeout_s,
        archive=archive,
        leadership=leadership,
    )
