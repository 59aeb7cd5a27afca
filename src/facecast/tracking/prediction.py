"""The faces of a frame the face mesh skips (`tracking.max_fps`), carried on from the last two it tracked.

Tracking at 30 Hz on a 60 fps camera halves MediaPipe's CPU, with the effect's the largest share of
a frame's (docs/PERFORMANCE.md). The frames between still need faces: held, the effect would move
in 30 Hz steps on a 60 fps stream; so each number of the last tracked faces (landmarks, head angles,
eye and mouth openness) moves on at the speed it had between the last two tracked frames. Nothing
waits for a later frame, so the latency stays what it is; what a prediction can miss is a change of
direction between two tracked frames, for at most the frames until the next one. The landmarks are
the smoothed ones (the One Euro filter's output), so their speed is steady enough to carry on.
"""

from __future__ import annotations

import numpy as np

from facecast.tracking.geometry import face_box
from facecast.types import Face, HeadPose

# Two tracked frames further apart than this (a dropped face, a stalled camera) give no speed to
# trust: the faces are held instead.
MAX_SPAN_S = 0.25


def _nearest(face: Face, candidates: list[Face]) -> Face:
    """The candidate whose box centre is nearest (MediaPipe does not keep the faces' order)."""
    cx, cy = face.center
    return min(candidates, key=lambda c: (c.center[0] - cx) ** 2 + (c.center[1] - cy) ** 2)


def _on(before: float, last: float, k: float) -> float:
    return last + (last - before) * k


def _carried(before: Face, last: Face, k: float, width: int, height: int) -> Face:
    """`last` moved on by k times its change since `before`."""
    lm = last.landmarks + (last.landmarks - before.landmarks) * np.float32(k)
    p0, p1 = before.pose, last.pose
    e0, e1 = before.eye_openness, last.eye_openness
    return Face(
        landmarks=lm,
        pose=HeadPose(pitch=_on(p0.pitch, p1.pitch, k), yaw=_on(p0.yaw, p1.yaw, k), roll=_on(p0.roll, p1.roll, k)),
        eye_openness=(max(0.0, _on(e0[0], e1[0], k)), max(0.0, _on(e0[1], e1[1], k))),
        mouth_openness=max(0.0, _on(before.mouth_openness, last.mouth_openness, k)),
        box=face_box(lm, width, height),
    )


class FacePredictor:
    """Remembers the last two tracked frames' faces; predicts a skipped frame's from them."""

    def __init__(self) -> None:
        self._before: tuple[float, list[Face]] | None = None
        self._last: tuple[float, list[Face]] | None = None

    @property
    def last_t(self) -> float | None:
        """When the last tracked frame was taken (None: none since the start or a reset)."""
        return None if self._last is None else self._last[0]

    def tracked(self, t: float, faces: list[Face]) -> None:
        self._before, self._last = self._last, (t, faces)

    def predict(self, t: float, width: int, height: int) -> list[Face]:
        """The faces at time `t` (seconds, after the last tracked frame). The speed is carried for
        at most one tracked interval; with no speed to go by the last faces are held."""
        if self._last is None:
            return []
        t1, last = self._last
        if self._before is None or not last:
            return list(last)
        t0, before = self._before
        span = t1 - t0
        if len(before) != len(last) or not 0 < span <= MAX_SPAN_S:
            return list(last)
        k = min(max((t - t1) / span, 0.0), 1.0)
        return [_carried(_nearest(face, before), face, k, width, height) for face in last]

    def reset(self) -> None:
        self._before = self._last = None


__all__ = ["MAX_SPAN_S", "FacePredictor"]
