"""The daemon's configuration: typed models, loading from YAML, --set overrides, one-line errors."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from facecast.capture.stage import CaptureConfig
from facecast.characters.library import CharactersConfig
from facecast.config_file import (  # noqa: F401  (re-exported: the names callers import from here)
    DEFAULT_CONFIG_FILE,
    DISCRIMINATORS,
    ConfigError,
    apply_override,
    default_config_path,
    read_config_file,
)
from facecast.configbase import StrictModel
from facecast.control.config import ControlConfig, HotkeysConfig
from facecast.effects.stage import EffectConfig
from facecast.engines.onnxruntime import EngineConfig
from facecast.jobs.config import JobsConfig
from facecast.models.registry import ModelsConfig
from facecast.outputs.ndi import NdiOutputConfig
from facecast.outputs.preview import PreviewOutputConfig
from facecast.outputs.record import RecordOutputConfig
from facecast.outputs.spout import SpoutOutputConfig
from facecast.outputs.stage import CLOSE_TIMEOUT_S, OutputConfig
from facecast.outputs.virtualcam import VirtualCamOutputConfig
from facecast.pipeline.work_size import WORK_SIZE_HELP, check_work_size
from facecast.threads import ThreadsConfig
from facecast.tracking.face_mesh import TrackingConfig


class PipelineConfig(StrictModel):
    queue_capacity: int = Field(2, ge=1, le=8, description="frames each queue between stages holds")
    queue_policy: Literal["auto", "drop_oldest", "block"] = Field(
        "auto", description="full queue: auto = drop the oldest frame for live sources, wait for files"
    )
    watchdog_s: float = Field(3.0, gt=0, description="report a stage busy on one frame for this long")
    shutdown_timeout_s: float = Field(
        CLOSE_TIMEOUT_S,
        gt=0,
        le=3600,
        description="at stop, how long the outputs get to write queued frames, flush and finalise (remux) recordings",
    )
    work_size: str = Field("auto", description=f"the size the effect works at: {WORK_SIZE_HELP}")

    @field_validator("work_size", mode="before")
    @classmethod
    def _work_size(cls, value: object) -> str:
        if not isinstance(value, str):  # e.g. a number: say what is allowed, not "not a string"
            raise ValueError(f"expected {WORK_SIZE_HELP}")
        return check_work_size(value)


class StatsConfig(StrictModel):
    interval_s: float = Field(5.0, ge=0, description="seconds between console status lines; 0 = none")
    window: int = Field(600, ge=10, description="recent frames the percentiles are computed over")


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = "info"


def _default_outputs() -> dict[str, Any]:
    return {
        "preview": PreviewOutputConfig(),
        "record": RecordOutputConfig(),
        "ndi": NdiOutputConfig(),
        "spout": SpoutOutputConfig(),
        "virtualcam": VirtualCamOutputConfig(),
    }


class Config(StrictModel):
    capture: CaptureConfig = CaptureConfig()
    tracking: TrackingConfig = TrackingConfig()
    effect: EffectConfig = EffectConfig()
    characters: CharactersConfig = CharactersConfig()
    outputs: dict[str, OutputConfig] = Field(default_factory=_default_outputs)
    pipeline: PipelineConfig = PipelineConfig()
    stats: StatsConfig = StatsConfig()
    models: ModelsConfig = ModelsConfig()
    engine: EngineConfig = EngineConfig()
    jobs: JobsConfig = JobsConfig()
    control: ControlConfig = ControlConfig()
    hotkeys: HotkeysConfig = HotkeysConfig()
    threads: ThreadsConfig = ThreadsConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("outputs")
    @classmethod
    def _output_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not name.replace("_", "").replace("-", "").isalnum():
                raise ValueError(f"output name {name!r} must be letters, digits, '-' or '_'")
        return value


def load_config(path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    raw, origin = read_config_file(path, overrides)
    try:
        return Config.model_validate(merge(Config().model_dump(mode="json"), raw))
    except ValidationError as exc:
        raise ConfigError("\n".join(format_error(e, origin) for e in exc.errors())) from None


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`update` on top of `base`, section by section. A plug-in whose `type` changes is replaced
    whole, so the old backend's keys do not leak into the new one."""
    out = dict(base)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and not _switches_backend(old, value):
            out[key] = merge(old, value)
        else:
            out[key] = value
    return out


def _switches_backend(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(k in old and k in new and old[k] != new[k] for k in DISCRIMINATORS)


def format_error(error: Mapping[str, Any], origin: str) -> str:
    path, parent_model = _clean_path(Config, error["loc"])
    key = ".".join(path) or "(top level)"
    value = error.get("input")
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(parent_model.model_fields) if parent_model else "see config.yaml"
        return f"config error ({origin}): {key}: unknown key; allowed here: {allowed}"
    if error["type"] == "missing":
        return f"config error ({origin}): {key}: required, not set"
    shown = _short(value)
    message = error["msg"].removeprefix("Value error, ")
    return f"config error ({origin}): {key} = {shown}: {message}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_path(model: Any, loc: tuple[Any, ...]) -> tuple[list[str], type[BaseModel] | None]:
    """Walk the model types along a pydantic error location; drop the tags pydantic adds for unions."""
    path: list[str] = []
    current: Any = model
    parent: type[BaseModel] | None = None
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent = current
            path.append(str(part))
            field = current.model_fields.get(str(part))
            current = field.annotation if field else None
        elif typing.get_origin(current) is dict:
            path.append(str(part))
            current = typing.get_args(current)[1]
        elif _union_members(current):
            tagged = [m for m in _union_members(current) if _tag_of(m) == part]
            if tagged:
                current = tagged[0]  # the tag pydantic inserted, not a key the user wrote
            else:
                path.append(str(part))
                current = None
        else:
            path.append(str(part))
            current = None
    if current is not None and isinstance(_unwrap(current), type) and issubclass(_unwrap(current), BaseModel):
        parent = _unwrap(current)
    return path, parent


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is Annotated:
        tp = typing.get_args(tp)[0]
    members = _union_members(tp)
    if members and len([m for m in members if m is not type(None)]) == 1:
        return next(m for m in members if m is not type(None))
    return tp


def _union_members(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return ()


def _tag_of(model: Any) -> Any:
    if isinstance(model, type) and issubclass(model, BaseModel):
        for key in DISCRIMINATORS:
            if key in model.model_fields:
                return model.model_fields[key].default
    return None
