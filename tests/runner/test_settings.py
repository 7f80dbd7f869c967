from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from polygon_runner.logs import JsonFormatter, SecretFilter
from polygon_runner.settings import SettingsError, load_settings

BASE = {
    "POLYGON_API_KEY": "pk_live_abcdef123456",
    "POLYGON_WS_SYMBOLS": "AAPL, BRK.B,AMpB,AAPL",
    "POLYGON_WS_HOST_REALTIME": "wss://business.polygon.io",
    "POLYGON_WS_HOST_DELAYED": "wss://delayed-business.polygon.io/",
    "REDIS_URL": "redis://:hunter2-pw@localhost:6379/0",
}


def test_brief_defaults() -> None:
    s = load_settings(BASE)
    assert s.symbols.symbols == ("AAPL", "BRK.B", "AMpB")
    assert not s.symbols.wildcard
    assert s.ws_host_delayed == "wss://delayed-business.polygon.io"
    assert (s.ttl.agg1m_s, s.ttl.fmv_s, s.ttl.trade_s, s.ttl.quote_s) == (120, 60, 60, 60)
    assert (s.ws_debug, s.ws_health_interval_s, s.discover_tickers, s.ticker_limit) == (
        False, 30.0, True, 0,
    )  # fmt: skip
    assert (s.subscribe_batch, s.backoff_initial_ms, s.backoff_factor, s.backoff_max_ms) == (
        500, 1000.0, 2.0, 30000.0,
    )  # fmt: skip
    assert not s.s3_enabled and s.s3_window_minutes == 30 and s.s3_use_marker
    assert (s.s3_max_object_bytes, s.s3_part_size_bytes) == (512_000_000, 16_777_216)
    assert s.store_backend == "redis" and s.redis_flush_interval_ms == 0.0
    assert s.redis_flush_interval_s == 0.0  # Redis: group commit, no interval
    assert s.rest_base == "https://api.polygon.io"
    assert s.ws_idle_timeout_s == 10.0


def test_every_bad_variable_is_named_at_once() -> None:
    env = {
        **BASE,
        "POLYGON_API_KEY": "",
        "POLYGON_WS_HOST_REALTIME": "https://business.polygon.io",
        "POLYGON_WS_HOST_DELAYED": "wss://delayed.polygon.io/stocks",
        "REDIS_URL": "mysql://x",
        "QUOTE_TTL_SEC": "0",
        "WS_DEBUG": "maybe",
        "BACKOFF_FACTOR": "fast",
        "S3_ENABLED": "true",
        "S3_WINDOW_MINUTES": "2000",
        "HEALTH_PORT": "70000",
        "WS_IDLE_TIMEOUT_SEC": "0.2",
    }
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert set(info.value.problems) == {
        "POLYGON_API_KEY",
        "POLYGON_WS_HOST_REALTIME",
        "POLYGON_WS_HOST_DELAYED",
        "REDIS_URL",
        "QUOTE_TTL_SEC",
        "WS_DEBUG",
        "BACKOFF_FACTOR",
        "S3_BUCKET",
        "AWS_REGION",
        "S3_WINDOW_MINUTES",
        "HEALTH_PORT",
        "WS_IDLE_TIMEOUT_SEC",
    }
    text = str(info.value)
    assert "WS_IDLE_TIMEOUT_SEC: must be a number of at least 1" in text
    assert "/stocks" in text and "ws://" in text


def test_idle_timeout() -> None:
    assert load_settings({**BASE, "WS_IDLE_TIMEOUT_SEC": "2.5"}).ws_idle_timeout_s == 2.5
    with pytest.raises(SettingsError) as info:
        load_settings({**BASE, "WS_IDLE_TIMEOUT_SEC": "soon"})
    assert set(info.value.problems) == {"WS_IDLE_TIMEOUT_SEC"}


def test_ha_settings() -> None:
    s = load_settings(BASE)
    assert (s.ha_enabled, s.ha_lease_ttl_ms) == (False, 5000)
    s = load_settings({**BASE, "HA_ENABLED": "true", "HA_LEASE_TTL_MS": "1000"})
    assert (s.ha_enabled, s.ha_lease_ttl_ms) == (True, 1000)
    with pytest.raises(SettingsError) as err:
        load_settings(
            {**BASE, "HA_LEASE_TTL_MS": "100", "HA_ENABLED": "maybe", "BACKOFF_FACTOR": "x"}
        )
    assert {"HA_LEASE_TTL_MS", "HA_ENABLED", "BACKOFF_FACTOR"} <= set(err.value.problems)
    with pytest.raises(SettingsError) as err:
        load_settings({**BASE, "REDIS_URL": "memory://", "HA_ENABLED": "true"})
    assert "shared store" in err.value.problems["HA_ENABLED"]


def test_upstash_needs_a_token_and_gets_a_slower_default_flush() -> None:
    env = {**BASE, "REDIS_URL": "https://db.upstash.io"}
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    assert set(info.value.problems) == {"REDIS_TOKEN"}
    s = load_settings({**env, "REDIS_TOKEN": "tok_secret_999"})
    assert s.store_backend == "upstash" and s.redis_flush_interval_ms == 1000.0
    assert s.redis_flush_interval_s == 1.0  # every Upstash command costs: batches wait 1 s
    with pytest.raises(SettingsError, match="REDIS_URL"):
        load_settings({**env, "REDIS_URL": "http://db.upstash.io", "REDIS_TOKEN": "t"})


def test_cluster_tls_and_wildcard() -> None:
    s = load_settings({**BASE, "REDIS_URL": "rediss+cluster://h:6380", "POLYGON_WS_SYMBOLS": "*"})
    assert s.store_backend == "redis" and s.symbols.wildcard


def test_secrets_never_in_repr_or_errors() -> None:
    s = load_settings(
        {**BASE, "REDIS_URL": "https://db.upstash.io", "REDIS_TOKEN": "tok_secret_999"}
    )
    text = repr(s) + str(s)
    assert "pk_live_abcdef123456" not in text and "tok_secret_999" not in text
    s = load_settings(BASE)
    assert "hunter2-pw" not in repr(s) and "***" in repr(s)
    with pytest.raises(SettingsError) as info:
        load_settings({**BASE, "REDIS_URL": "ftp://user:hunter2-pw@x"})
    assert "hunter2-pw" not in str(info.value) and "ftp://user:***@x" in str(info.value)
    assert "pk_live" not in str(info.value)


def test_dotenv_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "# comment\nexport POLYGON_API_KEY='from-dotenv'\nAGG1M_TTL_SEC=300 # five minutes\n"
        'POLYGON_WS_SYMBOLS="MSFT"\n'
    )
    env = {k: v for k, v in BASE.items() if k != "POLYGON_API_KEY"}
    s = load_settings(env, dotenv)
    assert s.polygon_api_key == "from-dotenv" and s.ttl.agg1m_s == 300
    assert s.symbols.symbols == ("AAPL", "BRK.B", "AMpB")  # environment wins


def test_nothing_to_subscribe() -> None:
    with pytest.raises(SettingsError, match="nothing to subscribe"):
        load_settings({**BASE, "POLYGON_WS_SYMBOLS": "", "POLYGON_DISCOVER_TICKERS": "false"})
    assert not load_settings({**BASE, "POLYGON_WS_SYMBOLS": ""}).symbols


def test_s3_settings() -> None:
    s = load_settings(
        {
            **BASE,
            "S3_ENABLED": "true",
            "S3_BUCKET": "b",
            "S3_PREFIX": "/polygon/raw/",
            "AWS_REGION": "us-east-1",
        }
    )
    assert s.s3_prefix == "polygon/raw" and s.s3_enabled
    with pytest.raises(SettingsError, match="S3_MAX_BUFFER_BYTES"):
        load_settings(
            {**BASE, "S3_ENABLED": "true", "S3_BUCKET": "b", "AWS_REGION": "r",
             "S3_MAX_BUFFER_BYTES": str(8 * 1024 * 1024)}
        )  # fmt: skip
    with pytest.raises(SettingsError, match="S3_PART_SIZE_BYTES"):
        load_settings({**BASE, "S3_PART_SIZE_BYTES": "1000"})


def test_secret_filter_scrubs_messages_and_extras(capsys) -> None:
    record = logging.LogRecord(
        "x", logging.INFO, "f", 1, "key is %s", ("pk_live_abcdef123456",), None
    )
    SecretFilter(["pk_live_abcdef123456", "", "abc"]).filter(record)
    line = JsonFormatter().format(record)
    assert "pk_live" not in line and json.loads(line)["msg"] == "key is ***"


def test_text_logs_show_extra_fields() -> None:
    from polygon_runner.logs import TextFormatter

    record = logging.LogRecord("x", logging.INFO, "f", 1, "health", None, None)
    record.health = {"events": 3}
    assert TextFormatter().format(record).endswith('health {"health":{"events":3}}')
