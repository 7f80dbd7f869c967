"""Logging set-up: JSON lines (CloudWatch-friendly) or text, with secrets scrubbed.

Only the runner configures handlers. Every record passes a filter that replaces the API
key, the Redis token and the Redis password with ``***`` wherever they appear, as a last
line of defence: the code never logs them on purpose.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable

__all__ = ["JsonFormatter", "SecretFilter", "TextFormatter", "configure_logging"]

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class SecretFilter(logging.Filter):
    """Replaces each secret in the rendered message (and exception text) with ``***``."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            clean = self.scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = self.scrub(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        item: dict[str, object] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                item[key] = value
        if record.exc_info:
            item["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            item["exc"] = record.exc_text
        return json.dumps(item, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """Human-readable lines; ``extra`` fields follow as compact JSON."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD and k[0] != "_"}
        if extras:
            line += " " + json.dumps(extras, default=str, separators=(",", ":"))
        return line


def configure_logging(level: str, fmt: str, secrets: Iterable[str] = ()) -> None:
    """Install one stderr handler with the chosen format and the secret filter."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("websockets", "aiobotocore", "botocore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.INFO))
