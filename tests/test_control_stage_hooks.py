"""The small hooks the live controls use in the stages: freeze frame, debug overlay, recalibrate,
starting/stopping one output by name. Driven by pushing real packets through the real stages."""

from __future__ import annotations

import time

import numpy as np
import pytest

from facecast.effects.base import Effect
from facecast.effects.debug import DebugConfig, DebugOverlay
from facecast.effects.passthrough import Passthrough
from facecast.effects.stage import EffectStage
from facecast.outputs.null import NullOutputConfig
from facecast.outputs.preview import PreviewOutputConfig
from facecast.outputs.record import RecordOutputConfig
from facecast.outputs.stage import OutputStage
from facecast.tracking.face_mesh import make_face
from facecast.types import FramePacket


def packet(seq: int, value: int, channels: int = 3, faces=None) -> FramePacket:
    image = np.full((120, 160, channels), value, np.uint8)
    return FramePacket(seq=seq, image=image, t_capture_ns=time.perf_counter_ns(), faces=faces)


class Neutral(Effect):
    """An effect with a neutral pose, as the animate effect has: logs its calls in order."""

    name = "neutral"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def recalibrate(self) -> None:
        self.calls.append("recalibrate")

    def apply(self, packet: FramePacket):
        self.calls.append(f"frame {packet.seq}")
        return packet.image


def stage(*extra: Effect) -> EffectStage:
    effects = {"passthrough": Passthrough(), "debug": DebugOverlay(DebugConfig(fps=False))}
    effects.update({e.name: e for e in extra})
    s = EffectStage(effects, "passthrough")
    s.start()
    return s


def test_freeze_repeats_the_last_image_until_unfrozen() -> None:
    s = stage()
    assert s.process(packet(0, 10)).image[0, 0, 0] == 10
    s.set_frozen(True)
    held = [s.process(packet(i, 20 + i)).image for i in range(1, 4)]
    assert all(img[0, 0, 0] == 10 for img in held)
    assert held[0] is held[1]  # one copy, repeated, not a copy per frame
    s.set_frozen(False)
    assert s.process(packet(4, 99)).image[0, 0, 0] == 99
    s.set_frozen(True)  # a second freeze holds the new last image
    assert s.process(packet(5, 50)).image[0, 0, 0] == 99


def test_freeze_holds_a_copy_so_a_reused_output_buffer_cannot_change_it() -> None:
    s = stage()
    first = packet(0, 10)
    out = s.process(first).image
    s.set_frozen(True)
    held = s.process(packet(1, 20)).image
    out[:] = 77  # the effect (here the capture buffer) reuses its memory
    assert s.process(packet(2, 30)).image is held and held[0, 0, 0] == 10


def _face(width: int = 160, height: int = 120):
    rng = np.random.default_rng(0)
    lm = np.zeros((478, 3), np.float32)
    lm[:, 0] = rng.uniform(40, 120, 478)
    lm[:, 1] = rng.uniform(30, 90, 478)
    return make_face(lm, width, height)


def test_debug_overlay_draws_over_any_effect_and_is_opaque_on_bgra() -> None:
    s = stage()
    plain = s.process(packet(0, 0, faces=[_face()])).image
    assert plain.max() == 0
    s.set_overlay(True)
    drawn = s.process(packet(1, 0, faces=[_face()])).image
    assert drawn.max() > 0  # landmarks and pose text on the passthrough image
    source = packet(2, 0, channels=4, faces=[_face()])
    original = source.image
    out = s.process(source).image
    assert out.shape[2] == 4
    marked = out[:, :, :3].any(axis=2)
    assert marked.any() and (out[marked, 3] == 255).all()  # drawn pixels are visible over transparency
    assert (out[~marked, 3] == 0).all()  # the rest keeps its alpha
    assert out is not original and original.max() == 0  # never drawn into the effect's own buffer
    s.set_overlay(False)
    assert s.process(packet(3, 0, faces=[_face()])).image.max() == 0


def test_recalibrate_calls_the_active_effects_hook_in_the_effect_thread_before_the_next_frame() -> None:
    neutral = Neutral()
    s = stage(neutral)
    assert s.recalibrate() is False  # passthrough has no neutral pose
    assert not s.can_recalibrate()
    s.select("neutral")
    assert s.can_recalibrate()
    assert s.recalibrate() is True
    assert neutral.calls == []  # nothing runs on the caller's thread
    s.process(packet(7, 1))
    s.process(packet(8, 1))
    assert neutral.calls == ["recalibrate", "frame 7", "frame 8"]  # before the next frame, once


def test_requested_effect_is_reported_before_the_effect_thread_switches() -> None:
    s = stage()
    s.select("debug")
    assert s.requested == "debug" and s.active == "passthrough"
    s.process(packet(0, 0))
    assert s.active == "debug"


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    configs = {
        "sink": NullOutputConfig(enabled=True),
        "record": RecordOutputConfig(enabled=False, path=str(tmp_path / "rec-{time}.mp4"), fps=30),
        "preview": PreviewOutputConfig(enabled=False),
    }
    s = OutputStage(configs)
    s.start()
    yield s, tmp_path
    s.close()


def test_an_output_starts_and_stops_by_name_while_frames_flow(outputs) -> None:
    s, folder = outputs
    assert s.status()["record"] == {"type": "record", "enabled": False}
    s.set_enabled("record", True)
    status = s.status()["record"]
    assert status["enabled"] and status["path"].startswith(str(folder))
    for i in range(20):
        s.process(packet(i, i * 10))
        time.sleep(0.005)
    s.set_enabled("record", False)
    assert not s.status()["record"]["enabled"]
    s.process(packet(20, 0))  # frames go on without it
    s.close()  # waits for the stopped recorder to finalise its file
    files = list(folder.glob("rec-*.mp4"))
    assert len(files) == 1
    from tests.conftest import count_frames

    assert count_frames(files[0]) == 20


def test_starting_an_output_that_cannot_open_says_why_and_changes_nothing(outputs) -> None:
    from facecast.outputs.base import OutputUnavailable

    s, _ = outputs
    with pytest.raises(OutputUnavailable, match="no X11 display"):
        s.set_enabled("preview", True)
    assert s.status()["preview"]["enabled"] is False
    with pytest.raises(KeyError):
        s.set_enabled("nope", True)
    s.set_enabled("sink", True)  # already on: nothing to do
    assert list(s.workers) == ["sink"]
