"""Config: config.yaml matches the models, every key is documented, errors name the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from facecast.config import Config, ConfigError, load_config
from tests.conftest import REPO, run_facecast

CONFIG_YAML = REPO / "config.yaml"


def _keys(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _keys(v, prefix + k + ".")
    return out


def test_config_yaml_equals_the_model_defaults():
    assert load_config(CONFIG_YAML).model_dump(mode="json") == Config().model_dump(mode="json")


def test_config_yaml_lists_and_documents_every_key():
    raw = yaml.safe_load(CONFIG_YAML.read_text())
    missing = _keys(Config().model_dump(mode="json")) - _keys(raw)
    assert not missing, f"keys not in config.yaml: {sorted(missing)}"
    lines = CONFIG_YAML.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_][\w-]*:", line):
            documented = "#" in line or (i > 0 and lines[i - 1].strip().startswith("#"))
            # A section header may instead be documented by its first child's comment block.
            assert documented or line.rstrip().endswith(":"), f"config.yaml line {i + 1} has no comment: {line!r}"


def _error(*overrides: str, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_unknown_key_names_the_path_and_the_allowed_keys():
    msg = _error("capture.fsp=30")
    assert "capture.fsp" in msg and "unknown key" in msg
    assert "fps" in msg and "width" in msg  # what is allowed there


def test_wrong_type_names_key_and_value():
    msg = _error("capture.fps=fast")
    assert msg.startswith("config error") and "capture.fps = 'fast'" in msg and "number" in msg


def test_bad_choice_lists_the_allowed_values():
    msg = _error("effect.active=sparkles")
    assert "effect.active = 'sparkles'" in msg and "'passthrough'" in msg and "'debug'" in msg


def test_out_of_range_value():
    msg = _error("tracking.max_faces=0")
    assert "tracking.max_faces = 0" in msg and "greater than or equal to 1" in msg


def test_error_inside_an_output_has_no_internal_tag_in_the_path():
    msg = _error("outputs.record.crf=99")
    assert "outputs.record.crf = 99" in msg and "record.record" not in msg


def test_unknown_output_type_lists_types():
    msg = _error("outputs.extra={type: hologram}")
    assert "outputs.extra" in msg and "'preview'" in msg and "'record'" in msg


def test_file_source_needs_a_path():
    assert "capture.file.path" in _error("capture.source=file")


def test_set_overrides_on_top_of_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("capture:\n  fps: 50\n  width: 800\n")
    cfg = load_config(path, ["capture.fps=30", "outputs.record.enabled=true"])
    assert (cfg.capture.fps, cfg.capture.width) == (30, 800)
    assert cfg.outputs["record"].enabled and cfg.outputs["preview"].enabled  # merged, not replaced


def test_set_into_a_value_is_refused(tmp_path):
    assert "capture.fps" in _error("capture.fps.max=3")  # named by validation
    path = tmp_path / "c.yaml"
    path.write_text("capture:\n  fps: 50\n")
    assert "capture.fps is a value" in _error("capture.fps.max=3", path=path)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("capture: [unclosed\n")
    assert "not valid YAML" in _error(path=path)


def test_cli_stops_with_one_line_naming_the_key():
    result = run_facecast("run", "--set", "capture.fsp=30", "--frames", "1", timeout=60)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "capture.fsp" in lines[0], result.stderr


def test_cli_config_prints_the_merged_config():
    result = run_facecast("config", "--set", "capture.fps=24", timeout=60)
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["capture"]["fps"] == 24


def test_switching_a_backend_from_the_command_line_drops_the_old_backends_keys():
    cfg = load_config(CONFIG_YAML, ["effect.animate.backend=liveportrait", "effect.animate.pose_multiplier=0.5"])
    assert cfg.effect.animate.backend == "liveportrait" and cfg.effect.animate.pose_multiplier == 0.5
    msg = _error("effect.swap.backend=deepfake")
    assert "effect.swap" in msg and "'mesh'" in msg and "'inswapper'" in msg
