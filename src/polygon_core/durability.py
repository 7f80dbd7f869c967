"""How long an archived line may wait in memory before it is durable in S3.

``S3_MAX_UNUPLOADED_SEC`` (``max_unuploaded_s``, default 60) bounds the time from a line's
``append`` to the moment S3 holds it in an uploaded part that recovery after a crash would
complete. A busy channel meets the bound by itself: its parts fill (``part_ready``) long
before. A quiet one does not, so the object's *tail*, the part being filled, is sent early.

The multipart rules decide how (Amazon S3 User Guide, "multipart upload limits"):

* Every part but the last must be at least 5 MiB. A tail of 5 MiB or more can therefore
  simply be cut as a part of its own (``TailAction.CUT``): the object goes on, the next part
  starts empty.
* A smaller tail may not stay a middle part. It is uploaded under the part number it will
  keep, *as a copy* (``TailAction.SEND``): S3 keeps the last upload of a part number, so
  the tail is sent again, longer, the next time it is due, and once more as the real part
  when it fills or the object completes (unless it has not changed since its last copy,
  whose ETag then serves). After a crash ``ListParts`` shows parts ``1..N-1`` and the copy
  of part ``N``, under 5 MiB, which ends the run recovery completes
  (``archive_policy.completable_parts``): the recovered object holds every line up to the
  copy, whole. A copy is never sent at 5 MiB or more (that tail is cut instead), so a copy
  can only ever be the last part recovery takes, never a gap in the middle.
* A time cut adds a part that is not full; an object still has to fit in 10,000 parts.
  When a cut now could leave too few part numbers for the rest of the object (its parts
  of ``part_size_bytes`` up to ``max_object_bytes``), the object is completed instead
  (``TailAction.ROTATE``) and the next lines go into the next ``seq`` of the window.

Quiet channels thus keep one object per window (its tail re-sent about once a minute,
each copy under 5 MiB), busy ones keep their full-size parts and objects.

When: the tail is due ``send_after_s`` after its oldest line not yet sent arrived, which is
``max_unuploaded_s`` less an allowance for the upload itself (``min(max_unuploaded_s / 2,
10 s)``). The bound holds while S3 answers within the allowance; in an S3 outage lines
buffer, as before, within ``S3_MAX_BUFFER_BYTES``.

Pure: times come in as plain numbers (the ``Clock``'s monotonic seconds).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from polygon_core.rotation import MAX_PARTS, MIN_PART_BYTES

__all__ = ["MAX_ALLOWANCE_S", "DurabilityPolicy", "TailAction"]

MAX_ALLOWANCE_S = 10.0
"""Most of ``max_unuploaded_s`` kept for the upload of a due tail."""


class TailAction(enum.Enum):
    CUT = "cut"
    """Cut the tail as a part (at least 5 MiB): the object goes on."""
    SEND = "send"
    """Upload a copy of the tail under its part number (under 5 MiB)."""
    ROTATE = "rotate"
    """Complete the object now (part numbers are running short); the next lines open the
    next ``seq``."""


@dataclass(frozen=True, slots=True)
class DurabilityPolicy:
    """When an object's tail is due, and what to do with it (see the module docstring)."""

    max_unuploaded_s: float
    part_size_bytes: int
    max_object_bytes: int

    def __post_init__(self) -> None:
        if not self.max_unuploaded_s > 0:
            raise ValueError(f"max_unuploaded_s must be positive, got {self.max_unuploaded_s}")
        if self.part_size_bytes < MIN_PART_BYTES or self.max_object_bytes < 1:
            raise ValueError("part size must be at least 5 MiB and the object limit positive")

    @property
    def send_after_s(self) -> float:
        """How long the oldest unsent line of a tail waits before the tail is due."""
        return self.max_unuploaded_s - min(self.max_unuploaded_s / 2, MAX_ALLOWANCE_S)

    def due_s(self, pending_since_s: float) -> float:
        """When a tail whose oldest unsent line arrived at ``pending_since_s`` is due."""
        return pending_since_s + self.send_after_s

    def action(self, tail_bytes: int, next_part: int, object_bytes: int) -> TailAction:
        """What to do with a due tail of ``tail_bytes`` (> 0), which would become part
        ``next_part`` of an object holding ``object_bytes`` (the tail included)."""
        if tail_bytes < 1 or next_part < 1 or object_bytes < tail_bytes:
            raise ValueError("a due tail holds bytes and belongs to its object")
        if tail_bytes < MIN_PART_BYTES:
            return TailAction.SEND
        # After the cut, the rest of the object comes in parts of at least part_size_bytes.
        room = max(self.max_object_bytes - object_bytes, 0)
        later_parts = -(-room // self.part_size_bytes)
        if next_part + later_parts <= MAX_PARTS:
            return TailAction.CUT
        return TailAction.ROTATE
