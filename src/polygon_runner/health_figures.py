"""Figures the health report reads from the store, the archive and the leader lease."""

from __future__ import annotations

from typing import Any

__all__ = ["archive_degraded", "archive_figures", "leader_figures", "node_resets"]


def node_resets(store: Any) -> dict[str, int]:
    """Times a Redis store left a node, by reason (``READONLY``, ``connection`` ...)."""
    counts = getattr(getattr(store, "stats", None), "resets_by_reason", None)
    return dict(counts) if isinstance(counts, dict) else {}


def archive_figures(archive: Any) -> dict[str, Any]:
    """The archive's ``stats.snapshot()`` (empty without an archive)."""
    stats = getattr(archive, "stats", None)
    snapshot = getattr(stats, "snapshot", None)
    return dict(snapshot()) if callable(snapshot) else {}


def archive_degraded(figures: dict[str, Any]) -> list[str]:
    """Why the archive is degraded (empty: it is not), from its figures."""
    why = []
    if figures.get("recovering"):
        why.append("archive: start-up recovery not done yet (S3 unreachable?); lines buffer")
    if figures.get("in_outage"):
        why.append("archive: S3 calls are failing (retrying with backoff); lines buffer")
    if figures.get("dropping"):
        why.append("archive: memory budget full; lines are being dropped")
    return why


def leader_figures(leadership: Any, now_s: float) -> dict[str, Any] | None:
    """Role, terms, fencings and whether the store answers lease requests (None without
    ``HA_ENABLED``). A store answer older than three lease TTLs (or none yet after that
    long) counts as not answering."""
    if leadership is None:
        return None
    last = leadership.last_answer_s
    limit = 3 * leadership.ttl_ms / 1000.0
    started = getattr(leadership, "started_s", None)
    answers = (
        (now_s - last <= limit)
        if last is not None
        else (started is None or now_s - started <= limit)
    )
    return {
        "role": leadership.role.value,
        "owner": leadership.owner,
        "terms": leadership.terms,
        "fenced": leadership.fenced,
        "store_answers": answers,
    }
