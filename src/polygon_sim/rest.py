"""The simulator's tickers REST endpoint, ``GET /v3/reference/tickers`` (protocol §10).

* Auth: ``?apiKey=KEY`` or ``Authorization: Bearer KEY``; otherwise HTTP 401 with Polygon's
  error body ``{"status":"ERROR","request_id":"...","error":"Unknown API Key"}`` (or
  ``"API Key was not provided"``).
* Filters: ``market`` (only ``stocks`` lists anything), ``active`` (default true; false
  lists the delisted tickers), ``type``, ``ticker``; sorted by ticker ascending;
  ``limit`` defaults to 100 and is capped at 1000.
* Pagination: ``next_url`` is ``{base}/v3/reference/tickers?cursor=...`` with an opaque
  base64 cursor holding the original query, and **no** ``apiKey``: clients must re-supply
  the key. A request with a cursor takes its filters from the cursor only.
* Faults (``Faults.rest_fail``, ``Faults.rest_repeat_cursor``): the next N requests get
  429 / 500 / any status with an error body; the repeated-cursor bug loops ``next_url``
  back to page 2.
"""

from __future__ import annotations

import base64
import binascii
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

import msgspec
from aiohttp import web

from polygon_sim.faults import Faults
from polygon_sim.tickers import TickerInfo

__all__ = ["RestStats", "TickersEndpoint"]

PATH = "/v3/reference/tickers"
MAX_LIMIT = 1000
_ERRORS = {
    429: "You've exceeded the maximum requests per minute, please wait or upgrade your "
    "subscription to continue. https://polygon.io/pricing",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
}
_encode = msgspec.json.Encoder().encode


@dataclass(slots=True)
class RestStats:
    requests: int = 0
    ok: int = 0
    unauthorized: int = 0
    bad_requests: int = 0
    faults_injected: int = 0
    keys_seen_in_query: int = 0
    keys_seen_in_header: int = 0


def _figi(symbol: str, salt: str) -> str:
    crc = zlib.crc32((salt + symbol).encode())
    digits = "BCDFGHJKLMNPQRSTVWXYZ0123456789"
    body = "".join(digits[(crc >> (5 * k)) % len(digits)] for k in range(6))
    return f"BBG00{body}{crc % 10}"


def _result(info: TickerInfo) -> dict[str, Any]:
    crc = zlib.crc32(info.ticker.encode())
    result: dict[str, Any] = {
        "ticker": info.ticker,
        "name": info.name,
        "market": "stocks",
        "locale": "us",
        "primary_exchange": info.primary_exchange,
        "type": info.type,
        "active": info.active,
        "currency_name": "usd",
        "cik": f"{crc % 2_000_000:010d}",
        "composite_figi": _figi(info.ticker, "c"),
        "share_class_figi": _figi(info.ticker, "s"),
        "last_updated_utc": "2025-05-07T00:00:00Z",
    }
    if not info.active:
        result["delisted_utc"] = "2023-03-13T00:00:00Z"
    return result


class _BadRequest(Exception):
    pass


class TickersEndpoint:
    """An aiohttp application serving the tickers listing over ``tickers``."""

    def __init__(self, api_key: str, tickers: list[TickerInfo], faults: Faults) -> None:
        self._api_key = api_key
        self._tickers = sorted(tickers, key=lambda info: info.ticker)
        self._faults = faults
        self.stats = RestStats()
        self.app = web.Application()
        self.app.router.add_get(PATH, self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        self.stats.requests += 1
        status = self._faults.take_rest_failure()
        if status is not None:
            self.stats.faults_injected += 1
            return _error(status, _ERRORS.get(status, "Simulated failure"))
        key = self._key(request)
        if key != self._api_key:
            self.stats.unauthorized += 1
            return _error(401, "API Key was not provided" if key is None else "Unknown API Key")
        try:
            body = self._page(request.query, str(request.url.origin()))
        except _BadRequest as exc:
            self.stats.bad_requests += 1
            return _error(400, str(exc))
        self.stats.ok += 1
        return web.Response(body=_encode(body), content_type="application/json")

    def _key(self, request: web.Request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            self.stats.keys_seen_in_header += 1
            return header.removeprefix("Bearer ").strip()
        key = request.query.get("apiKey")
        if key is not None:
            self.stats.keys_seen_in_query += 1
        return key

    def _page(self, query: Mapping[str, str], base: str) -> dict[str, Any]:
        params = _decode_cursor(query["cursor"]) if "cursor" in query else dict(query)
        params.pop("apiKey", None)
        try:
            limit = min(MAX_LIMIT, max(1, int(params.get("limit", "100"))))
            page = int(params.pop("page", "1"))
        except ValueError as exc:
            raise _BadRequest(f"invalid limit: {params.get('limit')!r}") from exc
        selected = self._select(params)
        marker = params.pop("page_marker", None)
        start = 0 if marker is None else _first_after(selected, marker)
        chunk = selected[start : start + limit]
        body: dict[str, Any] = {
            "results": [_result(info) for info in chunk],
            "status": "OK",
            "request_id": uuid.uuid4().hex,
            "count": len(chunk),
        }
        if start + limit < len(selected):
            params["limit"] = str(limit)
            if self._faults.rest_repeat_after == page:
                next_marker, next_page = selected[limit - 1].ticker, 2
            else:
                next_marker, next_page = chunk[-1].ticker, page + 1
            cursor = _encode_cursor({**params, "page_marker": next_marker, "page": str(next_page)})
            body["next_url"] = f"{base}{PATH}?cursor={cursor}"
        return body

    def _select(self, params: Mapping[str, str]) -> list[TickerInfo]:
        if params.get("market", "stocks") != "stocks":
            return []
        active = params.get("active", "true").lower() != "false"
        kind, ticker = params.get("type"), params.get("ticker")
        return [
            info
            for info in self._tickers
            if info.active is active
            and (kind is None or info.type == kind)
            and (ticker is None or info.ticker == ticker)
        ]


def _first_after(selected: list[TickerInfo], marker: str) -> int:
    for index, info in enumerate(selected):
        if info.ticker > marker:
            return index
    return len(selected)


def _encode_cursor(params: Mapping[str, str]) -> str:
    text = urlencode(sorted(params.items()))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, str]:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        pairs = parse_qsl(text, strict_parsing=True)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _BadRequest("Could not parse the cursor") from exc
    return dict(pairs)


def _error(status: int, message: str) -> web.Response:
    body = {"status": "ERROR", "request_id": uuid.uuid4().hex, "error": message}
    return web.Response(status=status, body=_encode(body), content_type="application/json")
