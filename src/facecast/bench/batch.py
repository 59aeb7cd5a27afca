"""A real batch load for `facecast bench --with-batch`: the daemon's batch thread running offline
jobs back to back while the live pipeline is measured: the live effect applied to a generated clip
(`animate`, `swap`), or diffusion video (`generate`) on a diffusers pipeline folder."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CLIP_FRAMES = 90
CLIP_SIZE = (480, 360)
BATCH_KINDS = ("animate", "swap", "generate")
GENERATE_PROMPT = "a person talks to the camera and smiles"
GENERATE_STEPS = 20


class BatchLoad:
    """Keeps one job running at all times on the daemon's engines, with the daemon's governor.

    `generate`: a diffusion job on `model` (a diffusers pipeline folder), text-to-video or
    image-to-video of the active character as the folder's class is, with `params` (GenerateParams
    keys: steps, frames, width, height...) over GENERATE_STEPS steps and the model's defaults."""

    def __init__(self, kind: str, model: Path | None = None, params: dict[str, Any] | None = None) -> None:
        if kind not in BATCH_KINDS:
            raise ValueError(f"batch kind {kind!r}: one of {', '.join(BATCH_KINDS)}")
        if (kind == "generate") != (model is not None):
            raise ValueError("a generate batch load needs a model folder, and only it takes one")
        self.kind = kind  # animate or swap: the job re-runs the live effect on a file; generate: diffusion
        self.model = model
        self.extra = dict(params or {})
        self._dir = Path(tempfile.mkdtemp(prefix="facecast-bench-batch-"))
        self._clip = self._dir / "clip.mp4"
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self.service: Any = None  # the JobService, made in start()
        self._t0 = 0.0
        self._stored: dict[str, Any] = {}
        # Made now, before the daemon starts: in start() it would eat into the frames the
        # measurement counts (the source's frame budget runs from the daemon's start).
        if kind != "generate":
            self._make_clip()

    def _make_clip(self) -> None:
        from facecast.capture.synthetic import synthetic_frames
        from facecast.media.video import write_video

        frames = synthetic_frames(CLIP_FRAMES, *CLIP_SIZE, fps=30.0)
        write_video(self._clip, (f.image for f in frames), 30.0)

    def start(self, daemon) -> None:
        from facecast.jobs.config import JobsConfig
        from facecast.jobs.service import JobService, default_kinds

        cfg = daemon.cfg
        jobs_cfg = JobsConfig(
            db=self._dir / "jobs.sqlite",
            output_dirs=[self._dir],
            input_dirs=[self._dir],
            min_live_ratio=cfg.jobs.min_live_ratio,
            max_live_latency_ratio=cfg.jobs.max_live_latency_ratio,
            generate_model=self.model,  # the folder given on the command line is trusted, as the config's is
            generate_device=cfg.jobs.generate_device,
        )
        kinds = default_kinds(cfg.model_copy(update={"jobs": jobs_cfg}), daemon.engines)  # reads its own clip
        self.service = JobService(
            jobs_cfg, kinds, live_fps=daemon.stats.fps, live_latency_ms=daemon.stats.recent_latency_ms
        )
        governor = self.service.runner.governor
        if governor is not None:  # the bench's warm-up is over: the live figures now are the reference
            governor.settle_s = governor.warmup_s = 0.0
        image = str(daemon.characters.active.path) if daemon.characters.active is not None else None
        self._params = self._job_params(image)
        self._submitted = 0
        self._submit()
        self._submit()  # one queued behind the running one: the batch thread never idles
        started = time.monotonic()
        self.service.runner.start()
        # Measure the steady state: a job's start (MediaPipe graph, character analysis; a diffusion
        # model's load, prompt encoding and first step) is a one-off burst.
        deadline = started + 120
        self._first_progress_s: float | None = None
        while time.monotonic() < deadline:
            current = self.service.runner.current
            if current is not None and current._progress > 0:
                self._first_progress_s = time.monotonic() - started
                break
            time.sleep(0.05)
        self._t0 = time.monotonic()
        self._progress_at_start = self.service.runner.current._progress if self.service.runner.current else 0.0
        self._feeder = threading.Thread(target=self._feed, name="bench-batch-feeder", daemon=True)
        self._feeder.start()

    def _job_params(self, image: str | None) -> dict[str, Any]:
        if self.kind == "generate":
            from facecast.jobs.kinds.generate import FAMILIES, pipeline_class

            assert self.model is not None
            family = FAMILIES.get(pipeline_class(self.model))
            params: dict[str, Any] = {"prompt": GENERATE_PROMPT, "model": str(self.model), "steps": GENERATE_STEPS}
            if family is not None and family.mode == "i2v":
                if image is None:
                    raise RuntimeError("--batch-kind generate on an image-to-video model needs a character")
                params["character"] = image
            return {**params, **self.extra}
        if image is None:
            raise RuntimeError("--with-batch needs a character (the batch job animates or swaps it)")
        if self.kind == "animate":
            return {"character": image, "driving": str(self._clip), **self.extra}
        return {"face": image, "target": str(self._clip), **self.extra}

    def _submit(self) -> None:
        self._submitted += 1
        job = self.service.submit(self.kind, self._params, str(self._dir / f"out-{self._submitted}.mp4"))
        self._stored = job.params  # as validated: the model's defaults filled in

    def _feed(self) -> None:
        while not self._stop.wait(0.2):
            if self.service.store.counts()["queued"] == 0:
                self._submit()

    def stop(self) -> dict[str, Any]:
        """Stop the batch thread; the figures of the batch work done during the measurement."""
        self._stop.set()
        elapsed = time.monotonic() - self._t0
        runner = self.service.runner
        current = runner.current
        partial = current._progress if current is not None else 0.0
        governor = runner.governor
        runner.stop(timeout=5 if self.kind != "generate" else 120)  # a diffusion step is not interrupted
        counts = self.service.store.counts()
        jobs_worked = counts["done"] + partial - self._progress_at_start  # jobs' worth of work measured
        figures: dict[str, Any] = {
            "kind": self.kind,
            "jobs_done": counts["done"],
            "jobs_failed": counts["failed"],
            "frames_per_s": round(jobs_worked * self._job_frames() / elapsed, 3) if elapsed > 0 else None,
            "governor_duty": round(governor.duty, 3) if governor is not None else None,
            "governor_pause_s": round(governor.slept_s, 2) if governor is not None else None,
            # from the batch thread's start to the job's first progress (left out of the measurement)
            "first_progress_s": round(self._first_progress_s, 2) if self._first_progress_s is not None else None,
            "errors": [j.error for j in self.service.store.list("failed")],
        }
        if self.kind == "generate":
            stored = self._stored
            # progress moves 0.95 over the denoising steps, the rest is decoding and writing the file
            steps = jobs_worked / 0.95 * int(stored["steps"])
            figures.update(
                model=str(self.model),
                job={k: stored[k] for k in ("mode", "steps", "frames", "width", "height") if k in stored},
                steps_per_s=round(steps / elapsed, 3) if elapsed > 0 else None,
            )
        self.close()
        return figures

    def close(self) -> None:
        """Stop the batch thread if it runs and remove the scratch folder (the clip, the queue, the jobs'
        outputs). Also after a measurement that failed."""
        if self.service is not None:
            self.service.close()
            self.service = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def _job_frames(self) -> int:
        if self.kind != "generate":
            return CLIP_FRAMES
        return int(self._stored["frames"])


# -- `facecast bench --jobs N --executor local,ray` --------------------------------------------------


def jobs_throughput(cfg, count: int, executors: list[str], kind: str = "animate") -> dict[str, Any]:
    """The same `count` render jobs (the effect on a generated clip) run by each executor in turn,
    from submit to the last output published: wall time and jobs per minute. The Ray executor uses
    the config's jobs.ray (its cluster must be running)."""
    from facecast.assets import bundled_characters_dir
    from facecast.jobs.executors import make_executor
    from facecast.jobs.service import JobService, default_kinds

    work = Path(tempfile.mkdtemp(prefix="facecast-bench-jobs-"))
    clip = work / "clip.mp4"
    from facecast.capture.synthetic import synthetic_frames
    from facecast.media.video import write_video

    write_video(clip, (f.image for f in synthetic_frames(CLIP_FRAMES, *CLIP_SIZE, fps=30.0)), 30.0)
    image = str(bundled_characters_dir() / "astronaut.png")
    params = {"character": image, "driving": str(clip)} if kind == "animate" else {"face": image, "target": str(clip)}
    runs = []
    try:  # the clip, the queues and the outputs are scratch: removed whatever happens
        for name in executors:
            folder = work / name
            folder.mkdir()
            jobs_cfg = cfg.jobs.model_copy(
                update={"db": folder / "jobs.sqlite", "output_dirs": [folder], "input_dirs": [work], "executor": name}
            )
            run_cfg = cfg.model_copy(update={"jobs": jobs_cfg})
            service = JobService(jobs_cfg, default_kinds(run_cfg), executor=make_executor(run_cfg))
            try:
                for i in range(count):
                    service.submit(kind, params, str(folder / f"out-{i}.mp4"))
                t0 = time.monotonic()
                service.runner.start()  # ExecutorUnavailable (no Ray, no cluster) says why
                while True:
                    counts = service.store.counts()
                    if counts["done"] + counts["failed"] + counts["cancelled"] >= count:
                        break
                    time.sleep(0.1)
                wall = time.monotonic() - t0
            finally:
                service.close()
            runs.append(
                {
                    "executor": name,
                    "slots": service.runner.executor.slots,
                    "jobs": count,
                    "done": counts["done"],
                    "failed": counts["failed"],
                    "wall_s": round(wall, 2),
                    "jobs_per_min": round(counts["done"] / wall * 60, 2) if wall > 0 else None,
                    "errors": sorted({j.error or "" for j in service.store.list("failed")}) if counts["failed"] else [],
                }
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"kind": kind, "clip_frames": CLIP_FRAMES, "clip_size": list(CLIP_SIZE), "runs": runs}


def format_jobs_throughput(data: dict[str, Any]) -> str:
    w, h = data["clip_size"]
    lines = [f"{data['kind']} jobs on a {data['clip_frames']}-frame {w}x{h} clip"]
    lines.append(f"{'executor':<10}{'slots':>6}{'jobs':>6}{'done':>6}{'wall s':>9}{'jobs/min':>10}")
    for r in data["runs"]:
        rate = r["jobs_per_min"] or "-"
        lines.append(f"{r['executor']:<10}{r['slots']:>6}{r['jobs']:>6}{r['done']:>6}{r['wall_s']:>9}{rate:>10}")
        lines += [f"    failed: {e}" for e in r["errors"]]
    return "\n".join(lines)
