"""Fault switches and request counters for the local Upstash-shaped REST server.

Tests flip these at runtime through ``UpstashServer.faults`` and read
``UpstashServer.stats``. Scheduled faults form a queue: each HTTP request consumes at
most one entry, in the order they were scheduled, so ``fail_next(429, 2)`` followed by
``drop_after_execute_next()`` gives requests 1-2 a 429 and drops request 3.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from enum import Enum
from http import HTTPStatus

HTML_TEMPLATE = (
    "<html>\r\n<head><title>{code} {reason}</title></head>\r\n"
    "<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n"
    "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
NON_JSON_BODY = "<html><body>upstream hiccup: this is not JSON</body></html>"


class FaultKind(Enum):
    STATUS = "status"  # answer with an HTML error page, commands not executed
    NON_JSON = "non_json"  # answer 200 with a non-JSON body, commands not executed
    DROP_AFTER_EXECUTE = "drop_after_execute"  # execute, then close without a reply


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    status: int = 200

    def html_reply(self) -> tuple[int, str]:
        """(status, HTML body) to answer with instead of running the commands."""
        if self.kind is FaultKind.NON_JSON:
            return 200, NON_JSON_BODY
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Error"
        return self.status, HTML_TEMPLATE.format(code=self.status, reason=reason)


@dataclass
class Faults:
    """Runtime fault switches; all off by default."""

    delay_s: float = 0.0
    """Delay before handling each request (seconds; 0 disables)."""
    delay_remaining: int | None = None
    """How many more requests get the delay; ``None`` means every request."""
    _queue: deque[Fault] = field(default_factory=deque, repr=False)

    def fail_next(self, status: int = 502, times: int = 1) -> None:
        """Answer the next ``times`` requests with ``status`` and an HTML body."""
        self._schedule(Fault(FaultKind.STATUS, status), times)

    def non_json_next(self, times: int = 1) -> None:
        """Answer the next ``times`` requests with 200 and a body that is not JSON."""
        self._schedule(Fault(FaultKind.NON_JSON), times)

    def drop_after_execute_next(self, times: int = 1) -> None:
        """Run the commands of the next ``times`` requests, then drop the connection."""
        self._schedule(Fault(FaultKind.DROP_AFTER_EXECUTE), times)

    def delay(self, seconds: float, times: int | None = None) -> None:
        """Delay the next ``times`` requests (all of them when ``None``) by ``seconds``."""
        self.delay_s = seconds
        self.delay_remaining = times

    def reset(self) -> None:
        """Turn every fault off."""
        self._queue.clear()
        self.delay_s = 0.0
        self.delay_remaining = None

    @property
    def pending(self) -> int:
        """Scheduled faults not yet consumed."""
        return len(self._queue)

    def take(self) -> Fault | None:
        """Consume the fault for the current request, if any (server use)."""
        return self._queue.popleft() if self._queue else None

    def take_delay(self) -> float:
        """Consume the delay for the current request, in seconds (server use)."""
        if self.delay_s <= 0 or self.delay_remaining == 0:
            return 0.0
        if self.delay_remaining is not None:
            self.delay_remaining -= 1
        return self.delay_s

    def _schedule(self, fault: Fault, times: int) -> None:
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        self._queue.extend([fault] * times)


@dataclass
class Stats:
    """What clients sent. ``commands`` is what Upstash would bill."""

    requests: int = 0
    """Every HTTP request received, including rejected and fault-injected ones."""
    commands: int = 0
    """Commands in authenticated, well-formed requests (each pipeline item counts)."""
    single_requests: int = 0
    pipelines: int = 0
    transactions: int = 0
    unauthorized: int = 0
    faults_injected: int = 0
    by_command: Counter[str] = field(default_factory=Counter)
    """Upper-case command name -> count (same basis as ``commands``)."""
    sync_tokens_seen: int = 0
    """Requests that carried a non-empty ``Upstash-Sync-Token`` header."""
    last_sync_token: str | None = None

    def record(self, names: list[str], endpoint: str) -> None:
        """Count one accepted request (``endpoint``: "", "pipeline" or "multi-exec")."""
        self.commands += len(names)
        self.by_command.update(name.upper() for name in names)
        if endpoint == "pipeline":
            self.pipelines += 1
        elif endpoint == "multi-exec":
            self.transactions += 1
        else:
            self.single_requests += 1

    def reset(self) -> None:
        self.requests = self.commands = self.single_requests = 0
        self.pipelines = self.transactions = self.unauthorized = self.faults_injected = 0
        self.by_command.clear()
        self.sync_tokens_seen = 0
        self.last_sync_token = None
