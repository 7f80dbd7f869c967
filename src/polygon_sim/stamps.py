"""Frame stamps for the benchmark's latency runs (``--frame-log PATH``).

Each data frame gets a number (1, 2, ...) that goes into one numeric field of every event it
carries, the field that reaches the Redis record unchanged: the trade's size ``s``
(``size``), the quote's bid size ``bs`` (``bidSize``) and the fair value ``fmv``
(``price``). The moment each frame was handed to the socket (``time.time()`` right after
``send`` returned) is kept per number, and written on stop to ``PATH`` as little-endian
float64 epoch seconds, index = frame number (index 0 unused). A reader of Redis that sees
a record can so tell when the frame that carried it was sent, to the microsecond, instead
of trusting the event's ``t`` (truncated to the ms and set before the frame was built).
Only for the benchmark: the stamped fields no longer look like a market.
"""

from __future__ import annotations

import time
from array import array
from pathlib import Path

from polygon_sim.wire import Event, FairValue, Quote, Trade

__all__ = ["FrameStamps", "read_frame_log"]


class FrameStamps:
    """Numbers frames, stamps their events, records their send times."""

    __slots__ = ("_path", "_sent")

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._sent = array("d", [0.0])

    def stamp(self, events: list[Event]) -> int:
        """Number the next frame and stamp ``events`` with it; returns the number."""
        number = len(self._sent)
        self._sent.append(0.0)
        for event in events:
            if type(event) is Quote:
                event.bs = number
            elif type(event) is Trade:
                event.s = number
            elif type(event) is FairValue:
                event.fmv = number
        return number

    def sent(self, number: int) -> None:
        """Frame ``number`` was just handed to the socket."""
        self._sent[number] = time.time()

    def write(self) -> None:
        with self._path.open("wb") as out:
            self._sent.tofile(out)


def read_frame_log(path: str | Path) -> array[float]:
    """What :meth:`FrameStamps.write` wrote: send time (epoch s) by frame number."""
    sent = array("d")
    sent.frombytes(Path(path).read_bytes())
    return sent
