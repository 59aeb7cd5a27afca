"""The objects a running pipeline holds from start-up are out of the cyclic collector's sight
(gc.freeze) while it runs, and handed back when it stops."""

from __future__ import annotations

import gc

from facecast.capture.stage import CaptureStage
from facecast.pipeline.runner import Pipeline
from facecast.pipeline.stage import Stage
from facecast.pipeline.stats import PipelineStats
from facecast.types import FramePacket
from tests.test_pipeline import CountingReader


class Holder(Stage):
    """A stage holding a start-up object, as the tracker holds MediaPipe's graph."""

    name = "holder"

    def __init__(self) -> None:
        self.loaded: list[dict[str, int]] | None = None

    def start(self) -> None:
        self.loaded = [{"weights": i} for i in range(10)]

    def process(self, packet: FramePacket) -> FramePacket:
        return packet


def _collected(obj: object) -> bool:
    """Whether the collector walks `obj` (frozen objects are in no generation gc.get_objects lists)."""
    return any(o is obj for o in gc.get_objects())


def test_start_up_objects_are_frozen_while_the_pipeline_runs_and_released_after():
    stage = Holder()
    pipeline = Pipeline(CaptureStage(CountingReader(10_000, fps=100.0)), [stage], PipelineStats(["capture", "holder"]))
    pipeline.start()
    try:
        assert stage.loaded is not None
        assert gc.get_freeze_count() > 0
        assert not _collected(stage.loaded), "a start-up object is still walked by every full collection"
        young = [{"frame": 1}]
        assert _collected(young), "objects made after start-up are collected as usual"
    finally:
        assert pipeline.stop()
    assert gc.get_freeze_count() == 0
    assert _collected(stage.loaded)
