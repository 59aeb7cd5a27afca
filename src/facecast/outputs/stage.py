"""The output stage: sends each frame to every enabled output; one failing output never stops the others."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import Annotated, Union

from pydantic import Field

from facecast.outputs.base import Output, OutputUnavailable
from facecast.outputs.null import NullOutput, NullOutputConfig
from facecast.outputs.preview import PreviewOutput, PreviewOutputConfig
from facecast.outputs.record import RecordOutput, RecordOutputConfig
from facecast.pipeline.stage import Stage, StartupError
from facecast.types import FramePacket

log = logging.getLogger(__name__)

# The `type` key picks the backend; adding an output = a file with its config + class, and a line here.
OutputConfig = Annotated[
    Union[PreviewOutputConfig, RecordOutputConfig, NullOutputConfig],
    Field(discriminator="type"),
]
OUTPUT_CLASSES: dict[str, type[Output]] = {
    "preview": PreviewOutput,
    "record": RecordOutput,
    "null": NullOutput,
}


def build_output(name: str, cfg) -> Output:
    return OUTPUT_CLASSES[cfg.type](name, cfg)


class OutputStage(Stage):
    name = "output"

    def __init__(self, configs: dict) -> None:
        self.configs = configs
        self.outputs: dict[str, Output] = {}
        self.failures: Counter[str] = Counter()
        self._lock = threading.Lock()

    def start(self) -> None:
        for name, cfg in self.configs.items():
            if not cfg.enabled:
                continue
            output = build_output(name, cfg)
            try:
                output.open()
            except OutputUnavailable as exc:
                log.warning("output %s (%s) skipped: %s", name, cfg.type, exc)
                continue
            except Exception as exc:
                self.close()
                raise StartupError(f"output {name} ({cfg.type}) cannot start: {exc}") from exc
            self.outputs[name] = output
            log.info("output %s (%s) ready", name, cfg.type)
        if not self.outputs:
            log.warning("no output is active: frames are processed and then discarded")

    def process(self, packet: FramePacket) -> FramePacket:
        with self._lock:
            outputs = list(self.outputs.values())
        for output in outputs:
            try:
                output.write(packet)
            except Exception:
                self.failures[output.name] += 1
                n = self.failures[output.name]
                if n <= 3 or n % 100 == 0:
                    log.exception("output %s failed on frame %d (%d failures)", output.name, packet.seq, n)
        return packet

    def close(self) -> None:
        with self._lock:
            outputs, self.outputs = list(self.outputs.values()), {}
        for output in outputs:
            try:
                output.close()
            except Exception:
                log.exception("output %s failed to close", output.name)
