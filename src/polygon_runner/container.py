"""The dependency-injector container: settings -> adapters -> use cases.

``Settings`` come in validated (see ``settings.py``). Resources open and close the clients;
the store is chosen by ``REDIS_URL``'s scheme with a ``Selector``.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from dependency_injector import containers, providers

from polygon_adapters.memory import InMemoryLatestStore
from polygon_adapters.redis_store import RedisLatestStore
from polygon_adapters.runtime import AsyncioScheduler, SystemClock
from polygon_adapters.upstash_store import UpstashLatestStore
from polygon_core.ingest import Ingest
from polygon_runner.check_redis import ReadableStore
from polygon_runner.settings import Settings, store_backend

__all__ = ["Container", "open_store"]


async def redis_store(url: str) -> AsyncIterator[RedisLatestStore]:
    store = RedisLatestStore.from_url(url)
    try:
        yield store
    finally:
        await store.aclose()


async def upstash_store(url: str, token: str) -> AsyncIterator[UpstashLatestStore]:
    store = UpstashLatestStore(url, token)
    try:
        yield store
    finally:
        await store.aclose()


async def memory_store() -> AsyncIterator[InMemoryLatestStore]:
    yield InMemoryLatestStore()


def open_store(url: str, token: str) -> AbstractAsyncContextManager[ReadableStore]:
    """The store ``url`` selects, as an async context manager (for ``check-redis``)."""
    backend = store_backend(url)
    if backend == "upstash":
        return asynccontextmanager(upstash_store)(url, token)
    if backend == "memory":
        return asynccontextmanager(memory_store)()
    return asynccontextmanager(redis_store)(url)


class Container(containers.DeclarativeContainer):
    settings = providers.Dependency(instance_of=Settings)

    clock = providers.Singleton(SystemClock)
    scheduler = providers.Singleton(AsyncioScheduler)

    store = providers.Selector(
        settings.provided.store_backend,
        redis=providers.Resource(redis_store, settings.provided.redis_url),
        upstash=providers.Resource(
            upstash_store, settings.provided.redis_url, settings.provided.redis_token
        ),
        memory=providers.Resource(memory_store),
    )

    ingest = providers.Singleton(
        Ingest,
        store=store,
        clock=clock,
        scheduler=scheduler,
        ttl=settings.provided.ttl,
        flush_interval_s=settings.provided.redis_flush_interval_s,
        log_writes=settings.provided.ws_debug,
        rng=providers.Object(random.random),
    )
