"""A fixed output size whatever the camera gives: letterbox, crop or stretch, with straight alpha.

Live senders (NDI, Spout, virtual camera) promise a receiver one size and one rate; the camera, the
effect or a file may produce any size. `fit_into` scales a frame into a buffer of the output's size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
from pydantic import Field, model_validator

from facecast.configbase import StrictModel
from facecast.outputs.base import flatten_alpha
from facecast.types import Image

Scaling = Literal["letterbox", "crop", "stretch"]
BGR = tuple[int, int, int]


class VideoOutputConfig(StrictModel):
    """Size, rate and scaling shared by the live senders (each adds its own `type` and keys)."""

    width: int = Field(1280, ge=16, le=7680, description="output width in pixels, whatever the camera size")
    height: int = Field(720, ge=16, le=4320, description="output height in pixels")
    fps: float = Field(
        60.0, gt=0, le=240, description="frames sent per second; the last frame is repeated when no new one is ready"
    )
    scaling: Scaling = Field(
        "letterbox",
        description="letterbox = whole frame, bars on the sides; crop = fill, cut the overflow; "
        "stretch = fill, distort",
    )

    @model_validator(mode="after")
    def _even_size(self) -> VideoOutputConfig:
        # NDI, Spout and every virtual camera backend convert to 4:2:x formats somewhere: odd sizes
        # are rejected or padded by them. Say so here rather than fail inside a backend.
        if self.width % 2 or self.height % 2:
            raise ValueError(f"width and height must be even numbers, got {self.width}x{self.height}")
        return self


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a source rectangle goes in the output: src (x0, y0, x1, y1) -> dst (x0, y0, x1, y1)."""

    src: tuple[int, int, int, int]
    dst: tuple[int, int, int, int]


def placement(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: Scaling) -> Placement:
    """The part of the source that is shown and where it lands in the output, centred."""
    if mode == "stretch" or (src_w * dst_h == src_h * dst_w):
        return Placement((0, 0, src_w, src_h), (0, 0, dst_w, dst_h))
    if mode == "letterbox":
        scale = min(dst_w / src_w, dst_h / src_h)
        w = max(1, min(dst_w, round(src_w * scale)))
        h = max(1, min(dst_h, round(src_h * scale)))
        x0, y0 = (dst_w - w) // 2, (dst_h - h) // 2
        return Placement((0, 0, src_w, src_h), (x0, y0, x0 + w, y0 + h))
    # crop: fill the output, cut what overflows, keep the centre
    scale = max(dst_w / src_w, dst_h / src_h)
    w = max(1, min(src_w, round(dst_w / scale)))
    h = max(1, min(src_h, round(dst_h / scale)))
    x0, y0 = (src_w - w) // 2, (src_h - h) // 2
    return Placement((x0, y0, x0 + w, y0 + h), (0, 0, dst_w, dst_h))


def fit_into(dst: Image, image: Image, mode: Scaling, fill: tuple[int, ...]) -> Image:
    """Scale `image` (BGR or BGRA, straight alpha) into `dst` (H x W x 3 or 4) in place.

    `fill` colours the letterbox bars (BGR, or BGRA: (0, 0, 0, 0) for transparent bars). A BGRA
    image into a 3-channel `dst` is composited over `fill`; a BGR image into a 4-channel `dst`
    gets alpha 255. Returns `dst`.

    This runs on an output's own thread for every new frame, next to busy pipeline threads: each
    step is one OpenCV call writing straight into `dst` (no temporary full frames, no per-pixel
    Python or numpy float work holding the GIL).
    """
    dst_h, dst_w, dst_c = dst.shape
    if image.ndim == 2:
        image = cast(Image, cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))  # uint8 in, uint8 out
    src_h, src_w = image.shape[:2]
    p = placement(src_w, src_h, dst_w, dst_h, mode)
    sx0, sy0, sx1, sy1 = p.src
    dx0, dy0, dx1, dy1 = p.dst
    if (dx0, dy0, dx1, dy1) != (0, 0, dst_w, dst_h):
        bar = tuple(float(v) for v in (tuple(fill) + (255,) * dst_c)[:dst_c])
        for x0, y0, x1, y1 in ((0, 0, dst_w, dy0), (0, dy1, dst_w, dst_h), (0, dy0, dx0, dy1), (dx1, dy0, dst_w, dy1)):
            if x1 > x0 and y1 > y0:
                cv2.rectangle(dst, (x0, y0), (x1 - 1, y1 - 1), bar, thickness=-1)
    region = image[sy0:sy1, sx0:sx1]
    if region.shape[2] == 4 and dst_c == 3:
        blue, green, red = fill[:3]
        region = flatten_alpha(region, (blue, green, red))
    target = dst[dy0:dy1, dx0:dx1]
    size = (dx1 - dx0, dy1 - dy0)
    same_size = size == (sx1 - sx0, sy1 - sy0)
    if region.shape[2] == dst_c:
        if same_size:
            np.copyto(target, region)
        elif dst_c == 4 and int(region[:, :, 3].min()) < 255:
            _resize_straight_alpha(region, size, target)
        else:
            _checked(cv2.resize(region, size, dst=target, interpolation=_interpolation(region, size)), target)
    else:  # BGR into BGRA: opaque
        if not same_size:
            region = cast(Image, cv2.resize(region, size, interpolation=_interpolation(region, size)))
        _checked(cv2.cvtColor(region, cv2.COLOR_BGR2BGRA, dst=target), target)
    return dst


def _interpolation(image: Image, size: tuple[int, int]) -> int:
    shrinking = size[0] < image.shape[1] or size[1] < image.shape[0]
    return cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR


def _checked(result: np.ndarray, target: Image) -> None:
    """OpenCV quietly allocates a new array when `dst` does not fit: copy in that case."""
    if not np.shares_memory(result, target):
        np.copyto(target, result)


def _resize_straight_alpha(image: Image, size: tuple[int, int], target: Image) -> None:
    """Resize in premultiplied space into `target`: straight-alpha resizing bleeds the colour of
    transparent pixels into the edges (dark halos around a cut-out character). OpenCV's mRGBA
    conversions premultiply any channel order (colour * alpha / 255), one SIMD pass each."""
    premultiplied = cv2.cvtColor(image, cv2.COLOR_RGBA2mRGBA)
    resized = cv2.resize(premultiplied, size, interpolation=_interpolation(image, size))
    _checked(cv2.cvtColor(resized, cv2.COLOR_mRGBA2RGBA, dst=target), target)


def output_size_note(src_w: int, src_h: int, dst_w: int, dst_h: int, mode: Scaling) -> str:
    """One line for the log: how frames of one size are fitted into the output."""
    if (src_w, src_h) == (dst_w, dst_h):
        return f"{dst_w}x{dst_h}, no scaling"
    return f"{src_w}x{src_h} -> {dst_w}x{dst_h} ({mode})"
