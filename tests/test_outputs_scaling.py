"""Fitting frames of any size into a fixed output size: letterbox, crop, stretch, alpha."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from facecast.outputs.scaling import VideoOutputConfig, fit_into, placement


def test_letterbox_keeps_the_whole_frame_centred_with_bars():
    p = placement(640, 480, 1280, 720, "letterbox")  # 4:3 into 16:9: bars left and right
    assert p.src == (0, 0, 640, 480)
    assert p.dst == (160, 0, 1120, 720)
    p = placement(1920, 1080, 640, 640, "letterbox")  # 16:9 into a square: bars top and bottom
    assert p.dst == (0, 140, 640, 500)


def test_crop_fills_the_output_and_keeps_the_centre():
    p = placement(640, 480, 1280, 720, "crop")
    assert p.dst == (0, 0, 1280, 720)
    assert p.src == (0, 60, 640, 420)  # 640x360 from the middle
    assert placement(1280, 720, 1280, 720, "crop").src == (0, 0, 1280, 720)


def test_stretch_and_same_aspect_use_everything():
    p = placement(640, 480, 1280, 720, "stretch")
    assert p.src == (0, 0, 640, 480) and p.dst == (0, 0, 1280, 720)
    p = placement(640, 360, 1280, 720, "letterbox")
    assert p.dst == (0, 0, 1280, 720)


def test_fit_bgr_into_bgra_letterbox_bars_and_opaque_picture():
    image = np.full((48, 64, 3), (10, 20, 30), np.uint8)
    dst = np.zeros((36, 96, 4), np.uint8)
    fit_into(dst, image, "letterbox", (0, 0, 0, 0))
    assert dst.shape == (36, 96, 4)
    assert (dst[:, :24] == 0).all() and (dst[:, 72:] == 0).all()  # transparent bars
    assert (dst[:, 24:72] == (10, 20, 30, 255)).all()


def test_fit_bgra_into_bgr_composites_over_the_fill_colour():
    image = np.zeros((20, 20, 4), np.uint8)
    image[:, :10] = (200, 100, 50, 255)
    image[:, 10:] = (200, 100, 50, 0)
    dst = np.zeros((20, 20, 3), np.uint8)
    fit_into(dst, image, "letterbox", (0, 177, 64))
    assert (dst[:, :10] == (200, 100, 50)).all()
    assert (dst[:, 10:] == (0, 177, 64)).all()


def test_resizing_straight_alpha_has_no_dark_halo():
    # A red disc on fully transparent *black* pixels: a straight-alpha resize would darken the edge.
    image = np.zeros((64, 64, 4), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    inside = (yy - 32) ** 2 + (xx - 32) ** 2 < 20**2
    image[inside] = (0, 0, 255, 255)
    dst = np.zeros((24, 24, 4), np.uint8)
    fit_into(dst, image, "stretch", (0, 0, 0, 0))
    edge = (dst[:, :, 3] > 0) & (dst[:, :, 3] < 255)
    assert edge.any()
    assert dst[edge][:, 2].min() >= 250  # partly transparent edge pixels stay fully red


def test_crop_into_bgra_scales_and_converts():
    image = np.zeros((480, 640, 3), np.uint8)
    image[60:420] = (1, 2, 3)  # the part a 16:9 crop keeps
    dst = np.zeros((180, 320, 4), np.uint8)
    fit_into(dst, image, "crop", (0, 0, 0, 0))
    assert (dst == (1, 2, 3, 255)).all()


def test_output_size_must_be_even():
    with pytest.raises(ValidationError, match="even"):
        VideoOutputConfig(width=641, height=480)
    assert VideoOutputConfig().width == 1280
