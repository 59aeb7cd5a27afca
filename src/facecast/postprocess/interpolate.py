"""Frame interpolation to a target frame rate.

`flow` (built in, CPU): dense DIS optical flow both ways between neighbours; a frame at fraction
`a` between them warps both towards time `a` (the flow at time a approximated from the two flows,
as Super SloMo does) and blends them by nearness. `onnx`: a RIFE-style model (contract
`interpolation/rife`: two frames stacked [1,6,H,W] in 0..1 -> the middle frame [1,3,H,W]),
for rates that are the source's times a power of two.

Output frame k is shown at k / target_fps; the duration stays the source's, so the audio still fits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import cast

import cv2
import numpy as np

from facecast.types import Image


def _flow(a: Image, b: Image) -> np.ndarray:
    dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY), cv2.cvtColor(b, cv2.COLOR_BGR2GRAY), np.empty(0, np.float32))


def _warp(image: Image, flow: np.ndarray) -> Image:
    h, w = flow.shape[:2]
    grid = np.indices((h, w), np.float32)
    warped = cv2.remap(
        image, grid[1] + flow[..., 0], grid[0] + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return cast(Image, warped)  # remap keeps the uint8 input's dtype


def flow_between(a: Image, b: Image, fractions: list[float]) -> list[Image]:
    """Frames at each fraction (0..1) of the way from `a` to `b`."""
    f01, f10 = _flow(a, b), _flow(b, a)
    out = []
    for t in fractions:
        ft0 = -(1 - t) * t * f01 + t * t * f10
        ft1 = (1 - t) * (1 - t) * f01 - t * (1 - t) * f10
        blend = (1 - t) * _warp(a, ft0).astype(np.float32) + t * _warp(b, ft1).astype(np.float32)
        out.append(np.clip(blend + 0.5, 0, 255).astype(np.uint8))
    return out


def times(count: int, source_fps: float, target_fps: float) -> list[float]:
    """Source positions (in frames) of the output frames: k * source/target for the same duration."""
    n = max(1, round(count * target_fps / source_fps))
    return [k * source_fps / target_fps for k in range(n)]


def interpolate_flow(frames: list[Image], source_fps: float, target_fps: float) -> list[Image]:
    out = []
    for p in times(len(frames), source_fps, target_fps):
        i = min(math.floor(p + 1e-6), len(frames) - 1)
        a = p - i
        if a < 1e-3 or i + 1 >= len(frames):
            out.append(frames[i])  # on a source frame, or past the last one (held)
        else:
            out.extend(flow_between(frames[i], frames[i + 1], [a]))
    return out


def interpolate_midpoints(frames: list[Image], middle: Callable[[Image, Image], Image], factor: int) -> list[Image]:
    """`factor` (a power of two) times the frames by recursive midpoints; the last frame is held."""
    for _ in range(int(math.log2(factor))):
        doubled = []
        for a, b in itertools.pairwise(frames):
            doubled += [a, middle(a, b)]
        doubled += [frames[-1], frames[-1]]
        frames = doubled
    return frames


class OnnxInterpolator:
    """A RIFE-style ONNX model on the engine pool: prepare (pure), forward (the engine), postprocess."""

    KEY = "interpolation/rife"

    def __init__(self, pool) -> None:
        self.engine = pool.get(self.KEY)

    @staticmethod
    def prepare(a: Image, b: Image) -> tuple[np.ndarray, tuple[int, int]]:
        h, w = a.shape[:2]
        ph, pw = -h % 32, -w % 32  # RIFE's pyramid wants multiples of 32
        stack = np.concatenate([a, b], axis=2)[:, :, [2, 1, 0, 5, 4, 3]].astype(np.float32) / 255
        stack = np.pad(stack, ((0, ph), (0, pw), (0, 0)), mode="edge")
        return stack.transpose(2, 0, 1)[None], (h, w)

    @staticmethod
    def postprocess(out: np.ndarray, size: tuple[int, int]) -> Image:
        h, w = size
        rgb = np.clip(out[0, :, :h, :w].transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(rgb[:, :, ::-1])

    def middle(self, a: Image, b: Image) -> Image:
        x, size = self.prepare(a, b)
        return self.postprocess(self.engine.run({"img": x}, "batch")["output"], size)
