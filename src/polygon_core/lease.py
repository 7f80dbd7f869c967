"""When to take, renew and give up the leader lease (SPEC §7): a pure policy.

The lease is a key in the store (``polygon-sink:leader``) set with ``NX PX ttl`` to a
random owner id. A *standby* tries to take it every ``acquire_interval_s``; an *active*
task renews it every ``renew_interval_s`` (a third of the TTL by default) and retries a
failed renewal every ``retry_interval_s``.

The fencing deadline: the store counts the TTL from when it *received* a successful
``SET``/renewal, which is after the task *sent* it. So a lease taken or renewed by a
request sent at ``t`` expires no earlier than ``t + ttl`` on the store's side. An active
task that has not renewed successfully by ``t_last_sent + ttl - margin`` must fence
itself (close both feeds, stop writing) *before* the lease could expire and another task
take it: :meth:`LeasePolicy.is_active` is False from the deadline on, whatever the
outcome of requests still in flight, and a renewal's result only counts from the time
its request was sent. ``margin`` covers closing the connections and clock-rate skew.

After an outage of the store, the lease is free for whoever asks first. The task that
led before it may hold values it could not write (``Ingest.hold``), which no other task
has seen; a standby without them (``eager`` false) gives it the first claim: once its
requests fail, it first probes the store with a ``release`` of its own id (which changes
nothing: a standby holds no lease, and a stale key of its own is one to free anyway),
and only ``claim_delay_s`` after an answer tries to take the lease. A SIGKILLed leader's
standby is not delayed: its requests were answered all along.

Pure: times come in as plain numbers (the ``Clock``'s monotonic seconds).
"""

from __future__ import annotations

import enum

__all__ = ["LeaseAction", "LeasePolicy", "Role"]


class Role(enum.Enum):
    STANDBY = "standby"
    ACTIVE = "active"


class LeaseAction(enum.Enum):
    ACQUIRE = "acquire"
    RENEW = "renew"
    FENCE = "fence"
    WAIT = "wait"
    PROBE = "probe"


class LeasePolicy:
    """The lease's timing; the runner asks :meth:`next_action` and reports outcomes."""

    def __init__(
        self,
        ttl_s: float,
        *,
        acquire_interval_s: float = 0.25,
        renew_fraction: float = 1 / 3,
        retry_interval_s: float | None = None,
        margin_s: float | None = None,
        claim_delay_s: float | None = None,
    ) -> None:
        if ttl_s <= 0:
            raise ValueError("the lease TTL must be positive")
        self.ttl_s = ttl_s
        self.acquire_interval_s = acquire_interval_s
        self.renew_interval_s = ttl_s * renew_fraction
        self.margin_s = ttl_s * 0.2 if margin_s is None else margin_s
        if not 0 < self.margin_s < ttl_s:
            raise ValueError("the fencing margin must be between 0 and the TTL")
        self.retry_interval_s = (
            min(self.renew_interval_s, 0.1 * ttl_s)
            if retry_interval_s is None
            else retry_interval_s
        )
        self.claim_delay_s = 4 * acquire_interval_s if claim_delay_s is None else claim_delay_s
        self.eager = False
        """Set by the runner: this task holds values of its last term, so it claims the
        lease as soon as the store answers (no probe, no delay)."""
        self._store_lost = False
        """A standby's last request failed (the store unreachable): probe before claiming."""
        self.role = Role.STANDBY
        self._held_since_sent: float | None = None
        """Send time of the last successful acquire/renewal (None: not held)."""
        self._next_at = float("-inf")

    # -- questions ---------------------------------------------------------------------

    def fence_deadline(self) -> float | None:
        """The time from which this task must no longer act as the leader (None: standby)."""
        if self._held_since_sent is None:
            return None
        return self._held_since_sent + self.ttl_s - self.margin_s

    def is_active(self, now: float) -> bool:
        """Whether the task may hold feed connections and write at ``now``."""
        deadline = self.fence_deadline()
        return self.role is Role.ACTIVE and deadline is not None and now < deadline

    def next_action(self, now: float) -> tuple[LeaseAction, float]:
        """What to do at ``now``, or ``WAIT`` with the seconds until the next decision."""
        if self.role is Role.STANDBY:
            if now >= self._next_at:
                if self._store_lost and not self.eager:
                    return LeaseAction.PROBE, 0.0
                return LeaseAction.ACQUIRE, 0.0
            return LeaseAction.WAIT, self._next_at - now
        deadline = self.fence_deadline()
        assert deadline is not None
        if now >= deadline:
            return LeaseAction.FENCE, 0.0
        if now >= self._next_at:
            return LeaseAction.RENEW, deadline - now
        return LeaseAction.WAIT, min(self._next_at, deadline) - now

    def request_timeout_s(self, now: float) -> float:
        """How long a lease request sent at ``now`` may take: an active task's renewal must
        be answered before its fencing deadline; a standby's acquire within a TTL."""
        deadline = self.fence_deadline()
        if self.role is Role.ACTIVE and deadline is not None:
            return max(deadline - now, 0.0)
        return self.ttl_s - self.margin_s

    # -- outcomes ----------------------------------------------------------------------

    def probed(self, now: float) -> None:
        """A standby's probe was answered: the store is back; claim after the delay."""
        self._store_lost = False
        self._next_at = now + self.claim_delay_s

    def acquired(self, sent_at: float, now: float) -> None:
        """The ``SET NX`` sent at ``sent_at`` succeeded (answered at ``now``)."""
        self._store_lost = False
        self._held_since_sent = sent_at
        if sent_at + self.ttl_s - self.margin_s <= now:  # answered too late to use
            self._held_since_sent = None
            self._next_at = now  # try again: it is ours on the store, renew will tell
            return
        self.role = Role.ACTIVE
        self._next_at = sent_at + self.renew_interval_s

    def renewed(self, sent_at: float, now: float) -> None:
        """The renewal sent at ``sent_at`` succeeded (answered at ``now``)."""
        if self.role is not Role.ACTIVE:
            return
        if self._held_since_sent is None or sent_at > self._held_since_sent:
            self._held_since_sent = sent_at
        self._next_at = max(sent_at + self.renew_interval_s, now)
        if not self.is_active(now):
            self.lost(now)

    def attempt_failed(self, now: float) -> None:
        """A request failed or timed out (the store unreachable): keep the current role;
        an active task retries soon and fences at its deadline if it never succeeds."""
        if self.role is Role.ACTIVE:
            self._next_at = now + self.retry_interval_s
        else:
            self._store_lost = True
            self._next_at = now + self.acquire_interval_s

    def not_acquired(self, now: float) -> None:
        """Another task holds the lease."""
        self._store_lost = False
        self._next_at = now + self.acquire_interval_s

    def lost(self, now: float) -> None:
        """The lease is no longer ours (a renewal found another owner, the fencing
        deadline passed, or it was released): back to standby."""
        self.role = Role.STANDBY
        self._held_since_sent = None
        self._next_at = now + self.acquire_interval_s
