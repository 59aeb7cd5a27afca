"""The device residency plan: what the neural effects send to the device and take back, per frame.

A GPU cannot be assumed here, so each real engine (onnxruntime on the CPU, over the contract
fixtures) is wrapped in a recorder that behaves like a device engine: `upload` and outputs kept
on the device become opaque resident values, and every host array crossing a call is counted as a
host->device or device->host copy. The plan is facecast's code choosing what to keep resident; these
tests hold it: per-character tensors go up once, and per frame only the driving crop (or the
target face) and a few keypoints go up and the image comes down.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from facecast.engines.onnxruntime import EngineConfig
from facecast.engines.pool import EnginePool
from facecast.neural import liveportrait as lp
from facecast.tracking.face_mesh import track_image
from tests.neural_fixtures import make_models

CROP_BYTES = 3 * 256 * 256 * 4  # the driving crop, float32
IMAGE_BYTES = 3 * 512 * 512 * 4  # the generated face, float32
VOLUME_BYTES = 32 * 16 * 64 * 64 * 4  # the appearance volume: 8 MiB


@dataclass
class Resident:
    """A value that lives on the (simulated) device: the host never sees its bytes."""

    value: object


class DeviceRecorder:
    """A real engine seen as a device engine, counting what crosses the bus."""

    def __init__(self, engine, log: list) -> None:
        self.engine, self.log = engine, log
        self.contract = engine.contract

    def upload(self, array):
        array = np.ascontiguousarray(array, dtype=np.float32)
        self.log.append(("h2d", self.contract.key, "upload", array.nbytes))
        return Resident(array)

    def run(self, feeds, priority="live", keep_on_device=()):
        host_feeds = {}
        for name, value in feeds.items():
            if isinstance(value, Resident):
                host_feeds[name] = value.value
            else:
                self.log.append(("h2d", self.contract.key, name, np.asarray(value, np.float32).nbytes))
                host_feeds[name] = value
        out = self.engine.run(host_feeds, priority)
        result = {}
        for name, value in out.items():
            if name in keep_on_device:
                result[name] = Resident(value)
            else:
                self.log.append(("d2h", self.contract.key, name, value.nbytes))
                result[name] = value
        return result


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    pool = EnginePool(
        make_models(tmp_path_factory.mktemp("models")),
        EngineConfig(device="cpu", warmup=False, cache_dir=tmp_path_factory.mktemp("cache")),
    )
    return lp.LivePortrait(pool)


def _record(model, log):
    for attr in ("appearance", "motion", "warping", "stitcher", "eye", "lip"):
        setattr(model, attr, DeviceRecorder(getattr(model, attr), log))


def _bytes(log, direction, key=None):
    return sum(n for d, k, _, n in log if d == direction and (key is None or k == key))


def test_liveportrait_keeps_the_character_on_the_device(model, portrait):
    log: list = []
    _record(model, log)
    face = track_image(portrait)[0]
    src = model.prepare_source(portrait, face.landmarks, face.eye_openness, 0.2)
    # once per character: the source crop goes up (appearance + motion), the volume stays there
    assert not any(d == "d2h" and k.endswith("appearance_feature_extractor") for d, k, _, _ in log)
    assert isinstance(src.feature, Resident) and isinstance(src.kp_source, Resident)

    neutral = None
    for _frame in range(3):
        log.clear()
        drv, _ = model.extract_motion(portrait, face.landmarks, lp.DRIVING_CROP)
        neutral = neutral or drv
        x_d = model.driving_keypoints(src, drv, neutral, eye_ratio=0.3, lip_ratio=0.1)
        model.generate(src, x_d)
        h2d, d2h = _bytes(log, "h2d"), _bytes(log, "d2h")
        # up: the driving crop, plus the keypoint vectors of the small networks (< 4 KB together)
        assert CROP_BYTES <= h2d < CROP_BYTES + 4096, log
        assert _bytes(log, "h2d", "liveportrait/warping_spade") == 21 * 3 * 4  # kp_driving only
        # down: the generated face, plus the motion and keypoint outputs (< 4 KB together)
        assert IMAGE_BYTES <= d2h < IMAGE_BYTES + 4096, log
        assert VOLUME_BYTES not in [n for _, _, _, n in log]  # the 8 MiB volume never moves per frame


def test_inswapper_keeps_the_identity_on_the_device(tmp_path_factory, portrait):
    from facecast.neural.faceswap import InSwapper

    pool = EnginePool(
        make_models(tmp_path_factory.mktemp("models")),
        EngineConfig(device="cpu", warmup=False, cache_dir=tmp_path_factory.mktemp("cache")),
    )
    swapper = InSwapper(pool)
    log: list = []
    swapper.swapper = DeviceRecorder(swapper.swapper, log)
    face = track_image(portrait)[0]
    latent = swapper.resident_latent(portrait, face.landmarks)
    assert isinstance(latent, Resident)
    for _ in range(3):
        log.clear()
        frame = portrait.copy()
        assert swapper.swap_face(frame, face.landmarks, latent)
        # up: the aligned target face only; down: the swapped face only (the latent stays resident)
        assert [(d, n) for d, _, _, n in log] == [("h2d", 3 * 128 * 128 * 4), ("d2h", 3 * 128 * 128 * 4)], log
