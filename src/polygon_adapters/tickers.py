"""Ticker discovery over Polygon's REST API: ``GET /v3/reference/tickers`` (aiohttp).

``market=stocks&active=true&limit=1000``, following ``next_url`` until it is absent or
``limit`` tickers were collected (``POLYGON_TICKER_LIMIT``; 0 = no cap). The key goes in the
``Authorization: Bearer`` header on every request, since ``next_url`` carries no key
(polygon-protocol.md §10); ``next_url``'s path and query are reused on the configured base
(``POLYGON_REST_BASE``), as the official client does, so a proxy or the simulator works.
A cursor seen before ends the walk with a warning (historical looping ``next_url`` bugs).
429 and 5xx are retried with backoff (honouring ``Retry-After``); anything else fails with
:class:`TickerDiscoveryError`, which the runner turns into a fall-back to the configured list.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import msgspec

from polygon_core.errors import PolygonIngestError
from polygon_core.keys import is_valid_symbol

__all__ = ["TickerDiscoveryError", "discover_tickers"]

logger = logging.getLogger(__name__)
PAGE_LIMIT = 1000
_RETRY = frozenset({413, 429, 499, 500, 502, 503, 504})


class TickerDiscoveryError(PolygonIngestError):
    """Discovery failed; the service falls back to the configured symbols."""


class _Ticker(msgspec.Struct):
    ticker: str


class _Page(msgspec.Struct):
    results: list[_Ticker] = []
    next_url: str | None = None
    status: str | None = None


_decode_page = msgspec.json.Decoder(_Page).decode


async def discover_tickers(
    rest_base: str,
    api_key: str,
    *,
    limit: int = 0,
    session: aiohttp.ClientSession | None = None,
    attempts: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 30.0,
) -> list[str]:
    """Active stock tickers, in the API's order, de-duplicated, at most ``limit`` (0 = all)."""
    own = session is None
    http = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    headers = {"Authorization": f"Bearer {api_key}"}
    base = rest_base.rstrip("/")
    path = f"/v3/reference/tickers?market=stocks&active=true&limit={_page_size(limit)}"
    tickers: dict[str, None] = {}
    seen_paths: set[str] = set()
    skipped = 0
    try:
        while path:
            seen_paths.add(path)
            page = await _get(http, base + path, headers, attempts, backoff_s)
            for item in page.results:
                if is_valid_symbol(item.ticker):
                    tickers.setdefault(item.ticker)
                else:
                    skipped += 1
                if limit and len(tickers) >= limit:
                    return list(tickers)[:limit]
            if not page.next_url:
                break
            parts = urlsplit(page.next_url)
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            if path in seen_paths:
                logger.warning("ticker discovery: next_url repeats a cursor; stopping there")
                break
    finally:
        if own:
            await http.close()
    if skipped:
        logger.warning("ticker discovery: skipped %d tickers with unusable symbols", skipped)
    return list(tickers)


def _page_size(limit: int) -> int:
    return PAGE_LIMIT if not limit else max(1, min(PAGE_LIMIT, limit))


async def _get(
    http: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    attempts: int,
    backoff_s: float,
) -> _Page:
    delay = backoff_s
    problem = "no attempt"
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)
        try:
            async with http.get(url, headers=headers) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if status in _RETRY:
            problem = f"HTTP {status}"
            delay = max(delay, _seconds(retry_after))
            continue
        if status != 200:
            raise TickerDiscoveryError(f"tickers endpoint answered HTTP {status}: {_error(body)}")
        try:
            return _decode_page(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise TickerDiscoveryError(f"tickers endpoint sent an unreadable page: {exc}") from exc
    raise TickerDiscoveryError(f"tickers endpoint failed {attempts} times; last: {problem}")


def _seconds(value: str | None) -> float:
    try:
        return min(float(value), 60.0) if value else 0.0
    except ValueError:
        return 0.0


def _error(body: bytes) -> Any:
    try:
        reply = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:200]
    return reply.get("error") or reply.get("message") if isinstance(reply, dict) else reply
