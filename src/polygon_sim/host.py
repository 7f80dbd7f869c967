"""What a connection needs of the simulator that accepted it (:class:`Host`).

:class:`~polygon_sim.server.PolygonSimulator` satisfies it; :mod:`polygon_sim.streamer`
depends on this protocol only, so the server imports the streamer and never the reverse.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Protocol

from polygon_core.subscriptions import FeedRole
from polygon_sim.config import ScriptedEvent, SimulatorConfig
from polygon_sim.connection import Connection
from polygon_sim.faults import Faults, StatusKill
from polygon_sim.live import LiveHost
from polygon_sim.market import HostMarket
from polygon_sim.stamps import FrameStamps
from polygon_sim.truth import Truth

__all__ = ["Host"]


class Host(Protocol):
    """The simulator as one of its connections sees it."""

    @property
    def config(self) -> SimulatorConfig: ...
    @property
    def truth(self) -> Truth: ...
    @property
    def faults(self) -> Faults: ...
    @property
    def markets(self) -> Mapping[FeedRole, HostMarket]: ...
    @property
    def scripts(self) -> Mapping[FeedRole, deque[ScriptedEvent]] | None: ...
    @property
    def stamps(self) -> FrameStamps | None: ...
    @property
    def live(self) -> Mapping[FeedRole, LiveHost] | None:
        """The realistic market's hosts (``None``: the flat market)."""
        ...

    def take_budget(self, n: int) -> int:
        """Up to ``n`` events granted under ``max_events``."""
        ...

    def refund_budget(self, n: int) -> None:
        """Give back events taken but not sent."""
        ...

    def claim_slot(self, conn: Connection) -> None:
        """Register an authenticated connection (one per host)."""
        ...

    def kill(
        self, conn: Connection, code: int | None, reason: str, status: StatusKill | None
    ) -> bool:
        """End ``conn`` (optionally after ``status``); ``False`` if already closing."""
        ...
