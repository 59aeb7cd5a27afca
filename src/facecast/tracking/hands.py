"""Hands in front of a face: MediaPipe Hands on a crop around each swapped face.

A hand is skin-coloured, so the swap's colour occlusion (neural/blend.py) cannot tell it from the
cheek it covers, and MediaPipe's face landmarks carry no per-point visibility. MediaPipe Hands
finds it instead: its lite palm detector and lite hand landmark model ship inside the mediapipe
wheel (mediapipe/modules/palm_detection, hand_landmark), so nothing is downloaded.

- A crop, not the frame: only a hand over the face matters, and the palm detector sees its input
  at 192x192 whatever its size, so on a whole 720p frame a hand would be a few dozen pixels. The
  crop (the face's centre +- CROP_REACH face sizes, scaled to HAND_CROP pixels) keeps the hand
  large for the models and leaves out hands elsewhere in the frame.
- Video mode: once a hand is found, the landmark model follows it from the previous frame's
  landmarks and the palm detector, the dearer model, is skipped while MAX_HANDS hands are tracked.
  MAX_HANDS is 1: with 2, the palm detector runs on every frame while one hand is tracked
  (measured: 28.5 ms of CPU per frame against 15.2 ms), so a second hand over the face is not kept
  in front.
- While no hand is tracked the palm detector is the whole cost (about 24 ms of CPU per search,
  whatever the crop's size), so the crop is searched only on every SEARCH_EVERY-th frame: a hand
  coming up is caught up to SEARCH_EVERY - 1 frames late, a tracked hand is followed on every frame.
  Offline (render, jobs) every frame is searched: there the time matters less than the frame.
- Measured on the project's 2-core AMD machine (720p synthetic driver frames, the real hand photo
  of tests/test_hands_occlusion.py pasted over the face; `time.process_time()`, since MediaPipe
  runs its graph on its own threads): mean 5.4-6.0 ms of CPU per face and frame with no hand,
  14.6-15.2 ms while a hand is tracked; inside the mesh swap, under a load of 3 on the 2 cores,
  7.4-8.6 and 20.6-22.5 ms. That is as much as the frame's face tracking, so `occlusion_hands` is
  off by default.

Runtime: one graph per face, created on first use (about 0.1 s to load) and used from the swap's
thread only, frames in order.
"""

from __future__ import annotations

import cv2
import numpy as np

from facecast.pipeline.stage import StartupError
from facecast.types import Image

HAND_CROP = 256  # pixels across the crop the models read
CROP_REACH = 1.0  # the crop reaches this many face sizes from the face's centre (a palm over the face is inside)
SEARCH_EVERY = 4  # with no hand tracked, the palm detector runs on every this many frames
MAX_HANDS = 1  # hands followed per face (each more runs the palm detector on every frame)
HAND_POINTS = 21

Hand = np.ndarray  # (21, 2) float32: one hand's landmarks in frame pixels, MediaPipe's order (wrist, thumb... little)


def hand_crop_box(T: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) around the face (landmarks `T`, x y in pixels) whose hands count,
    inside the frame of `shape`; None when it is empty."""
    lo, hi = T[:, :2].min(0), T[:, :2].max(0)  # the mesh's extent: the face oval's
    centre, reach = (lo + hi) / 2, CROP_REACH * float(max(hi - lo))
    x0, y0 = np.floor(centre - reach).astype(int)
    x1, y1 = np.ceil(centre + reach).astype(int)
    fh, fw = shape[:2]
    x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(fw, int(x1)), min(fh, int(y1))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return None
    return x0, y0, x1, y1


def prepare(frame: Image, box: tuple[int, int, int, int]) -> np.ndarray:
    """The crop as the read-only RGB array MediaPipe reads (read-only: referenced, not copied), its
    long side HAND_CROP pixels."""
    x0, y0, x1, y1 = box
    f = HAND_CROP / max(x1 - x0, y1 - y0)
    size = (max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f)))
    small = cv2.resize(frame[y0:y1, x0:x1, :3], size, interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    rgb.flags.writeable = False
    return rgb


def postprocess(found, box: tuple[int, int, int, int]) -> list[Hand]:
    """MediaPipe's hands (normalised to the crop) as landmarks in frame pixels."""
    x0, y0, x1, y1 = box
    scale = np.array([x1 - x0, y1 - y0], np.float32)
    origin = np.array([x0, y0], np.float32)
    return [np.array([(p.x, p.y) for p in hand.landmark], np.float32) * scale + origin for hand in found or []]


class HandTracker:
    """MediaPipe Hands in video mode on the crop around one face. One thread, frames in order."""

    def __init__(self, max_hands: int = MAX_HANDS, search_every: int = SEARCH_EVERY) -> None:
        try:
            from facecast.tracking.mediapipe_solutions import SolutionCall, solution

            Hands = solution("hands").Hands
        except ImportError as exc:  # pragma: no cover - mediapipe is a core requirement
            raise StartupError(f"hand occlusion needs mediapipe==0.10.21 ({exc}); run: make run") from exc
        # model_complexity 0: the lite palm detector and landmark model, both in the wheel.
        self._graph = Hands(static_image_mode=False, max_num_hands=max_hands, model_complexity=0)
        self._landmarks_of = SolutionCall(self._graph, "multi_hand_landmarks")
        self.search_every = search_every
        self._tracked = 0  # hands found on the last frame searched
        self._since_search = search_every  # so the first frame is searched

    def forward(self, rgb: np.ndarray):
        """The only call into MediaPipe: the hands' landmark lists (None when none was found)."""
        return self._landmarks_of(rgb)

    def __call__(self, frame: Image, T: np.ndarray) -> list[Hand]:
        """The hands over the face with landmarks `T` in `frame` (BGR), in frame pixels."""
        if not self._tracked and self._since_search < self.search_every - 1:
            self._since_search += 1
            return []
        box = hand_crop_box(T, frame.shape)
        if box is None:
            self._tracked = 0
            return []
        hands = postprocess(self.forward(prepare(frame, box)), box)
        self._tracked, self._since_search = len(hands), 0
        return hands

    def close(self) -> None:
        self._graph.close()


class FaceHands:
    """One HandTracker per face index (the swaps order faces left to right), created on first use."""

    def __init__(self) -> None:
        self._trackers: list[HandTracker] = []
        self.offline = False  # render and jobs: every frame is searched for a hand

    def warm(self) -> None:
        """Load the first face's graph now, not on the first live frame."""
        if not self._trackers:
            self._trackers.append(self._new())

    def _new(self) -> HandTracker:
        return HandTracker(search_every=1 if self.offline else SEARCH_EVERY)

    def __call__(self, index: int, frame: Image, T: np.ndarray) -> list[Hand]:
        while len(self._trackers) <= index:
            self._trackers.append(self._new())
        return self._trackers[index](frame, T)

    def close(self) -> None:
        """Drop the graphs; the next call starts a fresh one (a new video: nothing tracked across)."""
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []
