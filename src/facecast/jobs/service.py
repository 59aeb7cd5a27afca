"""What the control API, the CLI and the daemon share: submit (validated), list, cancel, retry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from facecast.jobs.config import JobsConfig
from facecast.jobs.runner import BatchRunner, JobKind, JobRejected, LiveGovernor
from facecast.jobs.store import Job, JobStore, OutputInUse

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv")


def check_output(output: str | Path, allowed: list[Path]) -> Path:
    """The resolved output path, or JobRejected saying why it cannot be written. Whether another
    job already writes it is checked when the job is queued (`JobStore.submit`), atomically."""
    try:
        out = Path(output).expanduser().resolve()
    except (OSError, ValueError, RuntimeError):
        raise JobRejected(f"output {output!r} is not a usable file name") from None
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise JobRejected(f"output {out.name}: use a video file name ending in {', '.join(VIDEO_SUFFIXES)}")
    roots = [Path(a).expanduser().resolve() for a in allowed]
    if not any(out.is_relative_to(root) for root in roots):
        where = ", ".join(map(str, roots))
        raise JobRejected(f"output {out} is outside the allowed folders ({where}; jobs.output_dirs)")
    if os.path.lexists(out):
        raise JobRejected(f"output {out} already exists: choose another name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobRejected(f"cannot create the output folder {out.parent}: {exc.strerror or exc}") from exc
    if not os.access(out.parent, os.W_OK):
        raise JobRejected(f"cannot write in {out.parent}")
    return out


class JobService:
    def __init__(
        self, cfg: JobsConfig, kinds: dict[str, JobKind], live_fps=None, live_latency_ms=None, executor=None
    ) -> None:
        self.cfg = cfg
        self.kinds = kinds
        self.store = JobStore(cfg.db_path())
        governor = None
        if live_fps is not None:
            governor = LiveGovernor(
                live_fps,
                cfg.min_live_ratio,
                live_latency_ms=live_latency_ms,
                max_latency_ratio=cfg.max_live_latency_ratio,
            )
        # executor: where claimed jobs run (jobs/executors/; None = the batch thread itself)
        self.runner = BatchRunner(self.store, kinds, governor=governor, lease_s=cfg.lease_s, executor=executor)

    def submit(self, kind: str, params: dict[str, Any], output: str) -> Job:
        if kind not in self.kinds:
            raise JobRejected(f"unknown job kind {kind!r}; known: {', '.join(self.kinds)}")
        out = check_output(output, self.cfg.output_dirs)
        checked = self.kinds[kind].validate(params)
        try:
            return self.store.submit(kind, checked, str(out))
        except OutputInUse as exc:
            raise JobRejected(str(exc)) from None

    def snapshot(self) -> dict[str, Any]:
        return self.runner.snapshot()

    def close(self) -> None:
        self.runner.stop()
        self.store.close()


def lora_dirs(cfg) -> list[Path]:
    """jobs.lora_dirs, or the loras folder inside models.dir when none is set."""
    return list(cfg.jobs.lora_dirs) or [cfg.models.resolved_dir() / "loras"]


def default_kinds(cfg, engines=None) -> dict[str, JobKind]:
    """Every job kind, on the daemon's config (same effect settings) and engine pool."""
    from facecast.assets import bundled_characters_dir
    from facecast.jobs.folders import AllowedFolders
    from facecast.jobs.kinds.generate import GenerateKind
    from facecast.jobs.kinds.replace import ReplaceKind
    from facecast.jobs.kinds.video_effect import VideoEffectKind
    from facecast.paths import user_characters_dir

    # The character library's folders too: its portraits are what a streamer animates first.
    library = [cfg.characters.dir] if cfg.characters.dir else [bundled_characters_dir(), user_characters_dir()]
    inputs = AllowedFolders([*cfg.jobs.input_dirs, *library], "jobs.input_dirs")
    models = [cfg.models.resolved_dir(), *cfg.jobs.generate_model_dirs]
    if cfg.jobs.generate_model is not None:
        models.append(cfg.jobs.generate_model)  # the config's own default is trusted
    model_folders = AllowedFolders(models, "models.dir, jobs.generate_model_dirs")
    kinds: dict[str, JobKind] = {
        "animate": VideoEffectKind("animate", cfg, inputs, engines),
        "swap": VideoEffectKind("swap", cfg, inputs, engines),
        "generate": GenerateKind(
            inputs, model_folders, cfg.jobs.generate_model, cfg.jobs.generate_device, lora_dirs(cfg)
        ),
        "replace": ReplaceKind(inputs, model_folders, cfg.jobs.generate_model, cfg.jobs.generate_device),
    }
    # Post steps (interpolation, quality report) for every kind, in this one place.
    from facecast.postprocess.hook import PostSteps

    return {name: PostSteps(kind, cfg.models.resolved_dir(), engines) for name, kind in kinds.items()}
