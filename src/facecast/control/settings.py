"""The `set` action: change an effect setting while the stream runs, checked like the config.

    set effect.animate.pose.yaw 1.4          (hotkey binding, `facecast ctl set ...`)
    POST /actions/set {"key": "effect.swap.opacity", "value": 0.7}

Keys are the config keys (config.yaml). Only the settings an effect reads on every frame can
change live (LIVE_KEYS); a key read when the effect starts (output size, backend, models...) is
refused with a sentence that says to change config.yaml and restart. A new value goes through the
effect's own config model (the same bounds and choices as config.yaml); an error names the key,
the value and what is allowed. It is then applied in the effect thread before its next frame
(`EffectStage.change_setting`), so no frame sees half a change. Values last for the session: the
config file is not written.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import annotated_types
import yaml
from pydantic import BaseModel, Field, ValidationError

from facecast.configbase import StrictModel
from facecast.control.actions import ActionError, action

if TYPE_CHECKING:
    from facecast.daemon import Daemon
    from facecast.effects.stage import EffectStage

# The swap backends share how a face is pasted (effects.swap_mesh.PasteConfig).
PASTE_SETTINGS = (
    "opacity",
    "blend",
    "feather",
    "color_match",
    "shading_scale",
    "color_smoothing_s",
    "steady",
    "occlusion",
    "occlusion_threshold",
    "occlusion_hands",
    "enhance.blend",
    "keep_mouth",
    "max_faces",
)
# Settings each effect backend reads on every frame, by (effect, backend). A backend missing here
# has no live settings; adding one = its line here (and a check that its effect reads self.cfg per frame).
LIVE_KEYS: dict[tuple[str, str | None], tuple[str, ...]] = {
    ("animate", "mesh"): (
        "pose.yaw",
        "pose.pitch",
        "pose.roll",
        "movement",
        "mouth",
        "eyes",
        "brows",
        "background",
        "background_color",
        "return_to_neutral_s",
    ),
    ("animate", "liveportrait"): (
        "pose_multiplier",
        "expression_multiplier",
        "eye_retargeting",
        "lip_retargeting",
        "background",
        "background_color",
        "return_to_neutral_s",
    ),
    ("swap", "mesh"): (*PASTE_SETTINGS, "keep_eyes", "eye_size"),
    ("swap", "inswapper"): PASTE_SETTINGS,
    ("debug", None): ("landmarks", "pose", "fps"),
}
APPLY_WAIT_S = 1.0  # how long `set` waits for the effect thread to take the value (one frame, normally)
SLIDER_STEPS = 100  # a number's range is cut into this many slider steps (rounded to 1, 2 or 5)

SettingKind = Literal["number", "integer", "switch", "choice", "color"]


class SetArgs(StrictModel):
    key: str = Field(
        min_length=1,
        description="the setting as in config.yaml, e.g. effect.animate.mouth, "
        "effect.swap.opacity (GET /settings lists them)",
    )
    value: bool | int | float | str | list[int] = Field(
        description="the new value; text is read as YAML like --set: 1.4, true, feather, [0, 177, 64]"
    )


@dataclass(frozen=True, slots=True)
class Setting:
    """One live setting: where it lives (`parent.field`) and what it accepts."""

    key: str  # effect.animate.pose.yaw
    effect: str  # animate
    parent: BaseModel  # the (sub-)model holding the field: the effect's own config object
    field: str

    @property
    def info(self):
        return type(self.parent).model_fields[self.field]

    @property
    def value(self) -> Any:
        value = getattr(self.parent, self.field)
        return list(value) if isinstance(value, tuple) else value

    def check(self, value: Any) -> Any:
        """The value as the config would hold it; ActionError (400) naming key, value and what is allowed."""
        if isinstance(value, str):
            value = _read_text(value)
        model = type(self.parent)
        try:
            checked = model.model_validate({**self.parent.model_dump(), self.field: value})
        except ValidationError as exc:
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ActionError(f"{self.key} = {_short(value)}: {reason}; allowed: {self.allowed()}", 400) from None
        return getattr(checked, self.field)

    def apply(self, value: Any) -> None:
        """In the effect thread (EffectStage.change_setting): the effect reads it from the next frame."""
        setattr(self.parent, self.field, value)

    def allowed(self) -> str:
        kind, low, high, choices = self.describe_range()
        if kind == "switch":
            return "true or false (on/off)"
        if kind == "choice":
            return "one of " + ", ".join(map(str, choices))
        if kind == "color":
            return "3 whole numbers (blue, green, red), e.g. [0, 177, 64]"
        what = "a whole number" if kind == "integer" else "a number"
        if low is not None and high is not None:
            return f"{what} from {_num(low)} to {_num(high)}"
        if low is not None:
            return f"{what} above {_num(low)}"
        return what

    def describe_range(self) -> tuple[SettingKind, float | None, float | None, list[Any]]:
        """(kind, lowest, highest, choices) from the field's type and bounds."""
        annotation = self.info.annotation
        if annotation is bool:
            return "switch", None, None, []
        if typing.get_origin(annotation) is Literal:
            return "choice", None, None, list(typing.get_args(annotation))
        if typing.get_origin(annotation) is tuple:
            return "color", 0, 255, []
        low: float | None = None
        high: float | None = None
        for meta in self.info.metadata:
            if isinstance(meta, annotated_types.Ge):
                low = cast(float, meta.ge)
            elif isinstance(meta, annotated_types.Gt):
                low = cast(float, meta.gt)
            elif isinstance(meta, annotated_types.Le):
                high = cast(float, meta.le)
            elif isinstance(meta, annotated_types.Lt):
                high = cast(float, meta.lt)
        return ("integer" if annotation is int else "number"), low, high, []

    def describe(self) -> dict[str, Any]:
        """For the control panel: a slider, switch, menu or colour with its bounds and current value."""
        kind, low, high, choices = self.describe_range()
        info: dict[str, Any] = {
            "key": self.key,
            "name": self.key.split(".", 2)[2],
            "kind": kind,
            "description": self.info.description or "",
            "value": self.value,
        }
        if kind in ("number", "integer"):
            gt = any(isinstance(m, annotated_types.Gt) for m in self.info.metadata)
            step = 1 if kind == "integer" else _nice_step(low, high)
            info.update(min=(low + step) if gt and low is not None else low, max=high, step=step)
        if kind == "choice":
            info["choices"] = choices
        return info


# -- finding a setting ---------------------------------------------------------------------------
def effect_config(stage: EffectStage, name: str) -> BaseModel | None:
    return getattr(stage.effects[name], "cfg", None)


def _backend(cfg: BaseModel) -> str | None:
    return getattr(cfg, "backend", None)


def live_keys(stage: EffectStage, name: str) -> tuple[str, ...]:
    cfg = effect_config(stage, name)
    return () if cfg is None else LIVE_KEYS.get((name, _backend(cfg)), ())


def find(stage: EffectStage, key: str) -> Setting:
    """The live setting `key`; ActionError 404 (no such key) or 409 (read only at start-up)."""
    parts = key.strip().split(".")
    if len(parts) < 3 or parts[0] != "effect" or parts[1] not in stage.effects:
        raise ActionError(
            f"unknown setting {key!r}: write effect.EFFECT.KEY, e.g. effect.animate.mouth "
            f"(effects: {', '.join(stage.effects)}; GET /settings lists every live setting)",
            404,
        )
    name, path = parts[1], ".".join(parts[2:])
    cfg = effect_config(stage, name)
    keys = live_keys(stage, name)
    label = name if cfg is None or _backend(cfg) is None else f"{name} ({_backend(cfg)})"
    if path not in keys:
        if cfg is not None and _has_path(cfg, parts[2:]):
            raise ActionError(
                f"effect.{name}.{path} is read when the effect starts: change it in config.yaml "
                f"and restart facecast (live settings of {label}: {', '.join(keys) or 'none'})",
                409,
            )
        raise ActionError(f"unknown setting {key!r}; live settings of {label}: {', '.join(keys) or 'none'}", 404)
    parent: Any = cfg
    for part in parts[2:-1]:
        parent = getattr(parent, part)
    return Setting(key=f"effect.{name}.{path}", effect=name, parent=parent, field=parts[-1])


def _has_path(model: BaseModel, parts: list[str]) -> bool:
    node: Any = model
    for part in parts:
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            return False
        node = getattr(node, part)
    return True


def every_setting(stage: EffectStage) -> list[Setting]:
    return [find(stage, f"effect.{name}.{key}") for name in stage.effects for key in live_keys(stage, name)]


def current(stage: EffectStage) -> dict[str, Any]:
    """Every live setting's value, by key (GET /state `settings`)."""
    return {s.key: s.value for s in every_setting(stage)}


def describe(stage: EffectStage) -> dict[str, Any]:
    """GET /settings: per effect, its backend and its live settings with bounds and values."""
    out: dict[str, Any] = {}
    for name in stage.effects:
        cfg = effect_config(stage, name)
        out[name] = {
            "backend": None if cfg is None else _backend(cfg),
            "settings": [find(stage, f"effect.{name}.{k}").describe() for k in live_keys(stage, name)],
        }
    return {"active": stage.requested, "effects": out}


# -- the action ----------------------------------------------------------------------------------
@action(
    "set",
    SetArgs,
    "Change an effect setting for this session (e.g. set effect.animate.mouth 1.4), "
    "checked like the config; applied before the next frame.",
)
def _set(d: Daemon, a: SetArgs) -> str:
    setting = find(d.effect, a.key)
    value = setting.check(a.value)
    applied = d.effect.change_setting(setting.key, lambda: setting.apply(value))
    shown = value if isinstance(value, str) else _short(list(value) if isinstance(value, tuple) else value)
    if not applied.wait(APPLY_WAIT_S):
        return f"{setting.key} = {shown} (applies with the next frame: none came within {APPLY_WAIT_S:g} s)"
    return f"{setting.key} = {shown}"


# -- helpers -------------------------------------------------------------------------------------
def _read_text(text: str) -> Any:
    """Text arguments are read as YAML, like `--set`: 1.4, true/on, feather, [0, 177, 64]."""
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def _short(value: Any) -> str:
    text = str(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _num(value: float) -> str:
    return f"{value:g}"


def _nice_step(low: float | None, high: float | None) -> float:
    """About SLIDER_STEPS steps over the range, rounded to 1, 2 or 5 times a power of ten."""
    if low is None or high is None or high <= low:
        return 0.01
    raw = (high - low) / SLIDER_STEPS
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return round(factor * power, 10)
    return round(10 * power, 10)
