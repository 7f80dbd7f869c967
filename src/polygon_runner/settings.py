"""Service settings from the environment (and a ``.env`` file; the environment wins).

Every variable of the brief keeps its default; the variables this project adds are marked
*new* in ``.env.example``. :func:`load_settings` checks everything and raises one
:class:`SettingsError` naming every bad variable and why; ``__main__`` turns it into exit
code 2. Secrets (``POLYGON_API_KEY``, ``REDIS_TOKEN``, a password in ``REDIS_URL``) never
appear in ``repr``, ``str`` or errors.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from polygon_adapters.redis_store import CLUSTER_SCHEMES, REDIS_SCHEMES, redact_url
from polygon_adapters.upstash_store import validate_upstash_url
from polygon_core.keys import TtlPolicy
from polygon_core.rotation import effective_part_size
from polygon_core.subscriptions import SymbolSelection, parse_symbols

__all__ = [
    "Settings",
    "SettingsError",
    "StoreBackend",
    "load_settings",
    "load_store_settings",
    "store_backend",
    "read_dotenv",
]

StoreBackend = Literal["redis", "upstash", "memory"]
T = TypeVar("T")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """Invalid configuration; ``problems`` maps each bad variable to the reason."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {name}: {why}" for name, why in problems.items())
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


def _secret() -> str:
    return field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Settings:
    """Validated settings. Field names follow the variables (lower case, units kept)."""

    polygon_api_key: str = field(repr=False)
    symbols: SymbolSelection
    ws_host_realtime: str
    ws_host_delayed: str
    redis_url: str = field(repr=False)
    redis_token: str = _secret()
    ws_debug: bool = False
    ws_health_interval_s: float = 30.0
    ws_idle_timeout_s: float = 10.0
    ttl: TtlPolicy = TtlPolicy()
    discover_tickers: bool = True
    ticker_limit: int = 0
    subscribe_batch: int = 500
    rest_base: str = "https://api.polygon.io"
    backoff_initial_ms: float = 1000.0
    backoff_factor: float = 2.0
    backoff_max_ms: float = 30000.0
    ws_max_frame_bytes: int = 16 * 1024 * 1024
    redis_flush_interval_ms: float = 0.0
    s3_enabled: bool = False
    s3_bucket: str = ""
    s3_prefix: str = ""
    aws_region: str = ""
    s3_endpoint_url: str = ""
    s3_window_minutes: int = 30
    s3_max_object_bytes: int = 512_000_000
    s3_part_size_bytes: int = 16 * 1024 * 1024
    s3_use_marker: bool = True
    s3_max_buffer_bytes: int = 512 * 1024 * 1024
    health_port: int = 8080
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    shutdown_timeout_s: float = 90.0
    ha_enabled: bool = False
    ha_lease_ttl_ms: int = 5000
    hostname: str = field(default_factory=socket.gethostname)

    @property
    def store_backend(self) -> StoreBackend:
        """Which store ``REDIS_URL`` selects."""
        return store_backend(self.redis_url)

    @property
    def redis_flush_interval_s(self) -> float:
        return self.redis_flush_interval_ms / 1000.0

    @property
    def redis_url_redacted(self) -> str:
        return redact_url(self.redis_url)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)
        return f"Settings(redis_url={self.redis_url_redacted!r}, {shown})"


def store_backend(url: str) -> StoreBackend:
    """Which store a ``REDIS_URL`` selects (by scheme)."""
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("https", "http"):
        return "upstash"
    if scheme == "memory":
        return "memory"
    return "redis"


def read_dotenv(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``export`` prefix, quotes and ``#`` comments allowed)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key.strip()] = value
    return values


class _Reader:
    """Reads variables, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: dict[str, str] = {}

    def raw(self, name: str) -> str | None:
        value = self.env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            self.problems[name] = "is required but not set"
            return ""
        return value

    def parse(self, name: str, default: T, convert: Callable[[str], T]) -> T:
        value = self.raw(name)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            shown = redact_url(value) if name == "REDIS_URL" else value
            self.problems[name] = f"{exc} (got {shown!r})"
            return default

    def flag(self, name: str, default: bool) -> bool:
        def convert(value: str) -> bool:
            if value.lower() in _TRUE:
                return True
            if value.lower() in _FALSE:
                return False
            raise ValueError("must be true or false")

        return self.parse(name, default, convert)

    def integer(self, name: str, default: int, minimum: int, maximum: int | None = None) -> int:
        def convert(value: str) -> int:
            number = int(value)
            if number < minimum or (maximum is not None and number > maximum):
                upper = f" and at most {maximum}" if maximum is not None else ""
                raise ValueError(f"must be an integer of at least {minimum}{upper}")
            return number

        return self.parse(name, default, _wrap(convert, "must be an integer"))

    def number(self, name: str, default: float, minimum: float) -> float:
        def convert(value: str) -> float:
            number = float(value)
            if not math.isfinite(number) or number < minimum:
                raise ValueError(f"must be a number of at least {minimum:g}")
            return number

        return self.parse(name, default, _wrap(convert, "must be a number"))


def _wrap(convert: Callable[[str], T], message: str) -> Callable[[str], T]:
    def inner(value: str) -> T:
        try:
            return convert(value)
        except ValueError as exc:
            text = str(exc)
            raise ValueError(text if text.startswith("must") else message) from None

    return inner


def _ws_host(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError("must be a ws:// or wss:// URL such as wss://business.polygon.io")
    if parts.path.rstrip("/").endswith("/stocks"):
        raise ValueError("must not include /stocks; the service appends it")
    if parts.query or parts.username or parts.password:
        raise ValueError("must not carry a query or credentials (the key goes in the auth frame)")
    return value.rstrip("/")


def _redis_url(value: str) -> str:
    scheme = urlsplit(value).scheme.lower()
    if scheme in REDIS_SCHEMES + CLUSTER_SCHEMES:
        if not urlsplit(value).hostname:
            raise ValueError("has no host")
        return value
    if scheme in ("https", "http"):
        return validate_upstash_url(value)
    if scheme == "memory":
        return value
    raise ValueError(
        "must be redis://, rediss://, redis+cluster://, rediss+cluster:// or an https:// "
        "Upstash REST URL"
    )


def _http_base(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http(s):// URL")
    return value.rstrip("/")


def _merged(environ: Mapping[str, str], dotenv: Path | None) -> dict[str, str]:
    env: dict[str, str] = {}
    if dotenv is not None and dotenv.is_file():
        env.update(read_dotenv(dotenv))
    env.update(environ)
    return env


def _store_variables(r: _Reader) -> tuple[str, str]:
    redis_url = r.required("REDIS_URL")
    redis_url = r.parse("REDIS_URL", redis_url, _redis_url) if redis_url else ""
    token = r.raw("REDIS_TOKEN") or ""
    if redis_url and store_backend(redis_url) == "upstash" and not token:
        r.problems["REDIS_TOKEN"] = "is required when REDIS_URL is an Upstash REST URL"
    return redis_url, token


def load_store_settings(environ: Mapping[str, str], dotenv: Path | None = None) -> tuple[str, str]:
    """Only ``REDIS_URL`` and ``REDIS_TOKEN``, validated (for ``check-redis``)."""
    r = _Reader(_merged(environ, dotenv))
    url, token = _store_variables(r)
    if r.problems:
        raise SettingsError(r.problems)
    return url, token


def load_settings(environ: Mapping[str, str], dotenv: Path | None = None) -> Settings:
    """Validate ``environ`` (over ``dotenv`` when that file exists) into :class:`Settings`."""
    env = _merged(environ, dotenv)
    r = _Reader(env)

    api_key = r.required("POLYGON_API_KEY")
    discover = r.flag("POLYGON_DISCOVER_TICKERS", True)
    symbols = SymbolSelection(False, ())
    if "POLYGON_WS_SYMBOLS" not in env:
        r.problems["POLYGON_WS_SYMBOLS"] = "is required (comma-separated symbols, or *)"
    else:
        symbols = r.parse("POLYGON_WS_SYMBOLS", symbols, parse_symbols)
        if not symbols and not discover and "POLYGON_WS_SYMBOLS" not in r.problems:
            r.problems["POLYGON_WS_SYMBOLS"] = (
                "is empty and POLYGON_DISCOVER_TICKERS is false: nothing to subscribe"
            )
    realtime = r.required("POLYGON_WS_HOST_REALTIME")
    delayed = r.required("POLYGON_WS_HOST_DELAYED")
    realtime = r.parse("POLYGON_WS_HOST_REALTIME", realtime, _ws_host) if realtime else ""
    delayed = r.parse("POLYGON_WS_HOST_DELAYED", delayed, _ws_host) if delayed else ""
    redis_url, token = _store_variables(r)
    backend = store_backend(redis_url) if redis_url else "redis"

    ttl_values = {
        name: r.integer(var, default, 1)
        for name, var, default in (
            ("agg1m_s", "AGG1M_TTL_SEC", 120),
            ("fmv_s", "FMV_TTL_SEC", 60),
            ("trade_s", "TRADE_TTL_SEC", 60),
            ("quote_s", "QUOTE_TTL_SEC", 60),
        )
    }
    backoff_initial = r.number("BACKOFF_INITIAL_MS", 1000.0, 1.0)
    backoff_max = r.number("BACKOFF_MAX_MS", 30000.0, 1.0)
    if backoff_max < backoff_initial and "BACKOFF_MAX_MS" not in r.problems:
        r.problems["BACKOFF_MAX_MS"] = "must be at least BACKOFF_INITIAL_MS"
    flush_default = 1000.0 if backend == "upstash" else 0.0

    s3_enabled = r.flag("S3_ENABLED", False)
    s3_bucket = r.raw("S3_BUCKET") or ""
    region = r.raw("AWS_REGION") or r.raw("AWS_DEFAULT_REGION") or ""
    part_size = r.integer("S3_PART_SIZE_BYTES", 16 * 1024 * 1024, 5 * 1024 * 1024)
    max_object = r.integer("S3_MAX_OBJECT_BYTES", 512_000_000, 1)
    buffer_budget = r.integer("S3_MAX_BUFFER_BYTES", 512 * 1024 * 1024, 1024 * 1024)
    if s3_enabled:
        if not s3_bucket:
            r.problems["S3_BUCKET"] = "is required when S3_ENABLED=true"
        if not region:
            r.problems["AWS_REGION"] = "is required when S3_ENABLED=true"
        if "S3_PART_SIZE_BYTES" not in r.problems and "S3_MAX_OBJECT_BYTES" not in r.problems:
            try:
                effective = effective_part_size(part_size, max_object)
            except ValueError as exc:
                r.problems["S3_MAX_OBJECT_BYTES"] = str(exc)
            else:
                smallest = min(effective, max_object)
                if buffer_budget < smallest:
                    r.problems["S3_MAX_BUFFER_BYTES"] = (
                        f"must be at least one part or object ({smallest} bytes) so that "
                        "anything can be uploaded"
                    )

    ha_enabled = r.flag("HA_ENABLED", False)
    ha_ttl = r.integer("HA_LEASE_TTL_MS", 5000, 500, 60_000)
    if ha_enabled and backend == "memory" and "REDIS_URL" not in r.problems:
        r.problems["HA_ENABLED"] = "needs a shared store: REDIS_URL must be Redis or Upstash"

    settings = Settings(
        polygon_api_key=api_key,
        symbols=symbols,
        ws_host_realtime=realtime,
        ws_host_delayed=delayed,
        redis_url=redis_url,
        redis_token=token,
        ws_debug=r.flag("WS_DEBUG", False),
        ws_health_interval_s=r.number("WS_HEALTH_INTERVAL_SEC", 30.0, 1.0),
        ws_idle_timeout_s=r.number("WS_IDLE_TIMEOUT_SEC", 10.0, 1.0),
        ttl=TtlPolicy(**ttl_values),
        discover_tickers=discover,
        ticker_limit=r.integer("POLYGON_TICKER_LIMIT", 0, 0),
        subscribe_batch=r.integer("POLYGON_SUBSCRIBE_BATCH", 500, 1),
        rest_base=r.parse("POLYGON_REST_BASE", "https://api.polygon.io", _http_base),
        backoff_initial_ms=backoff_initial,
        backoff_factor=r.number("BACKOFF_FACTOR", 2.0, 1.0),
        backoff_max_ms=backoff_max,
        ws_max_frame_bytes=r.integer("WS_MAX_FRAME_BYTES", 16 * 1024 * 1024, 1024 * 1024),
        redis_flush_interval_ms=r.number("REDIS_FLUSH_INTERVAL_MS", flush_default, 0.0),
        s3_enabled=s3_enabled,
        s3_bucket=s3_bucket,
        s3_prefix=(r.raw("S3_PREFIX") or "").strip("/"),
        aws_region=region,
        s3_endpoint_url=r.parse("S3_ENDPOINT_URL", "", _http_base),
        s3_window_minutes=r.integer("S3_WINDOW_MINUTES", 30, 1, 1440),
        s3_max_object_bytes=max_object,
        s3_part_size_bytes=part_size,
        s3_use_marker=r.flag("S3_USE_MARKER", True),
        s3_max_buffer_bytes=buffer_budget,
        health_port=r.integer("HEALTH_PORT", 8080, 0, 65535),
        log_format=r.parse("LOG_FORMAT", "json", _log_format),
        log_level=r.parse("LOG_LEVEL", "INFO", _log_level),
        shutdown_timeout_s=r.number("SHUTDOWN_TIMEOUT_SEC", 90.0, 1.0),
        ha_enabled=ha_enabled,
        ha_lease_ttl_ms=ha_ttl,
        hostname=r.raw("S3_HOSTNAME") or socket.gethostname(),
    )
    if r.problems:
        raise SettingsError(r.problems)
    return settings


def _log_format(value: str) -> Literal["json", "text"]:
    lowered = value.lower()
    if lowered == "json":
        return "json"
    if lowered == "text":
        return "text"
    raise ValueError("must be json or text")


def _log_level(value: str) -> str:
    upper = value.upper()
    if upper not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return upper
