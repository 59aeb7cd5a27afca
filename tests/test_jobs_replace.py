"""The replace job: control signals made from a real person on the CPU, and whole jobs on tiny
random-weight Wan-Animate and Wan VACE pipelines (built from configs; nothing downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the diffusion extras (facecast[diffusion]) are not installed")

from facecast.controls.build import make_controls
from facecast.controls.pose import COLORS_RGB, MEDIAPIPE_FOR_OPENPOSE
from facecast.jobs.folders import AllowedFolders
from facecast.jobs.kinds.replace import ReplaceKind
from facecast.jobs.runner import BatchRunner, JobRejected
from facecast.jobs.store import JobStore
from facecast.jobs.tiny import wan_animate, wan_vace
from tests.conftest import PORTRAIT, run_facecast, write_video
from tests.test_jobs_cli import _probe

FPS = 24.0


def _performer_frames(count: int = 11) -> list[np.ndarray]:
    """The bundled astronaut (head, shoulders, arms) sliding sideways: a real person moving."""
    image = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    return [
        cv2.warpAffine(image, np.float32([[1, 0, 3 * i - 15], [0, 1, 0]]), (512, 512), borderMode=cv2.BORDER_REPLICATE)[
            ::2, ::2
        ].copy()
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def performer(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("drv") / "performer.mp4", _performer_frames(), FPS, audio=True)


@pytest.fixture(scope="module")
def tiny_animate(tmp_path_factory) -> Path:
    return wan_animate.build(tmp_path_factory.mktemp("models") / "tiny-wan-animate")


@pytest.fixture(scope="module")
def tiny_vace(tmp_path_factory) -> Path:
    return wan_vace.build(tmp_path_factory.mktemp("models") / "tiny-wan-vace")


def _kind(performer: Path, model: Path) -> ReplaceKind:
    return ReplaceKind(
        AllowedFolders([performer.parent, PORTRAIT.parent], "jobs.input_dirs"),
        AllowedFolders([model.parent], "models.dir, jobs.generate_model_dirs"),
    )


def _params(performer: Path, model: Path, **kw) -> dict:
    return {
        "character": str(PORTRAIT),
        "driving": str(performer),
        "model": str(model),
        "width": 32,
        "height": 32,
        "steps": 2,
        "segment_frames": 9,
        **kw,
    }


def test_the_skeleton_and_mask_land_on_mediapipe_pose_of_the_same_frames():
    from mediapipe.python.solutions.pose import Pose

    frames = _performer_frames(5)
    controls = make_controls(frames, 128, 128, face_size=64, with_mask=True)
    assert controls.pose_frames == 5 and controls.face_frames == 5
    scale = 128 / 256
    with Pose(static_image_mode=True, model_complexity=1) as pose:
        for i, frame in enumerate(frames):
            found = pose.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)).pose_landmarks.landmark
            skeleton, mask = controls.pose[i], controls.mask[i]
            # nose, shoulders, eyes, ears: joints MediaPipe sees on the astronaut
            for k in (0, 2, 5, 14, 15, 16, 17):
                lm = found[MEDIAPIPE_FOR_OPENPOSE[k]]
                assert lm.visibility > 0.5
                x, y = round(lm.x * 256 * scale), round(lm.y * 256 * scale)
                # The joint's disc (its own colour) within 4 px (3 % of the frame) of where MediaPipe,
                # run separately on the same frame, puts it (video-mode tracking differs slightly).
                ys, xs = np.nonzero(np.abs(skeleton.astype(int) - np.array(COLORS_RGB[k])).sum(axis=2) <= 30)
                assert len(xs), f"frame {i}: keypoint {k} not drawn"
                nearest = float(np.hypot(xs - x, ys - y).min())
                assert nearest <= 4, f"frame {i}: keypoint {k} drawn {nearest:.1f} px from MediaPipe's ({x}, {y})"
                assert mask[y, x] == 255, f"frame {i}: the mask misses joint {k}"
            # Outside the person (the flag's corner, top left) the mask is empty and nothing is drawn.
            assert mask[:12, :12].max() == 0 and skeleton[:12, :12].max() == 0
    # The person's share of the frame: the astronaut covers roughly half of it.
    share = float(np.mean([m.mean() / 255 for m in controls.mask]))
    assert 0.3 < share < 0.8


def test_preview_controls_writes_the_control_videos_without_a_model(performer, tmp_path):
    out = tmp_path / "controls"
    done = run_facecast(
        "jobs", "submit", "replace", "--character", str(PORTRAIT), "--driving", str(performer),
        "--mode", "replace", "--width", "64", "--height", "64", "--preview-controls", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "body in 11, face in 11" in done.stdout
    for name in ("pose", "face", "mask"):
        probe = _probe(out / f"{name}.mp4")
        assert probe["frames"] == 11 and probe["fps"] == pytest.approx(FPS)


def test_replace_job_with_wan_animate_keeps_frames_fps_and_audio(performer, tiny_animate, tmp_path):
    (tmp_path / "recordings").mkdir()
    out = tmp_path / "recordings" / "replaced.mp4"
    common = (
        "jobs", "--offline", "--set", f"jobs.db={tmp_path / 'jobs.sqlite'}",
        "--set", f"jobs.input_dirs=[{performer.parent}, {PORTRAIT.parent}]",
        "--set", f"jobs.generate_model_dirs=[{tiny_animate.parent}]",
    )  # fmt: skip
    submitted = run_facecast(
        *common, "submit", "replace", "--character", str(PORTRAIT), "--driving", str(performer),
        "--mode", "replace", "--model", str(tiny_animate), "--width", "32", "--height", "32",
        "--steps", "2", "--segment-frames", "9", "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    ran = run_facecast(*common, "run", cwd=tmp_path, timeout=600)
    assert ran.returncode == 0, ran.stderr
    source, result = _probe(performer), _probe(out)
    assert result["frames"] == source["frames"] == 11  # 2 segments of 9 with 1 frame of overlap, trimmed
    assert result["fps"] == pytest.approx(FPS)
    assert result["audio"] and result["audio_s"] == pytest.approx(source["audio_s"], abs=0.05)


def test_animate_job_with_wan_vace_keeps_frames_and_fps(performer, tiny_vace, tmp_path):
    kind = _kind(performer, tiny_vace)
    store = JobStore(tmp_path / "jobs.sqlite")
    out = tmp_path / "vace.mp4"
    store.submit("replace", kind.validate(_params(performer, tiny_vace, mode="animate")), str(out))
    final = BatchRunner(store, {"replace": kind}).run_one()
    assert final.status == "done", final.error
    result = _probe(out)
    assert result["frames"] == 11 and result["fps"] == pytest.approx(FPS) and result["audio"]


def test_a_video_without_a_person_is_refused_at_submit(tmp_path, tiny_vace):
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 255, (128, 128, 3), np.uint8) for _ in range(9)]
    video = write_video(tmp_path / "noise.mp4", noise, FPS)
    with pytest.raises(JobRejected, match="no person found"):
        _kind(video, tiny_vace).validate(_params(video, tiny_vace))


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"segment_frames": 10}, r"segment_frames must be 4k\+1"),
        ({"width": 40}, "width divisible by 16"),
        ({"mode": "swap"}, "mode: Input should be 'animate' or 'replace'"),
        ({"width": 32, "height": None}, "both width and height"),
    ],
)
def test_bad_replace_requests_are_refused_with_the_reason(performer, tiny_vace, change, reason):
    params = {k: v for k, v in _params(performer, tiny_vace, **change).items() if v is not None}
    with pytest.raises(JobRejected, match=reason):
        _kind(performer, tiny_vace).validate(params)


def test_a_model_of_another_family_is_refused(performer, tmp_path):
    other = tmp_path / "wan-i2v"
    other.mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    with pytest.raises(JobRejected, match="is a WanImageToVideoPipeline; replace needs a Wan-Animate or Wan VACE"):
        _kind(performer, other).validate(_params(performer, other))
