"""A job output's quality report: temporal flicker, and the identity similarity to the character
with ArcFace (w600k_r50) when that model is in models.dir."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from facecast.types import Image

IDENTITY_SAMPLES = 16  # frames looked at for the identity (spread over the video)


def flicker(frames: list[Image]) -> dict[str, float]:
    """`flicker`: mean change of the frame's mean brightness from one frame to the next (0..255);
    `change`: mean absolute pixel change between neighbours (0..255), motion included."""
    if len(frames) < 2:
        return {"flicker": 0.0, "change": 0.0}
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY).astype(np.float32) for f in frames]
    means = np.array([g.mean() for g in grey])
    change = float(np.mean([np.abs(b - a).mean() for a, b in itertools.pairwise(grey)]))
    return {"flicker": round(float(np.abs(np.diff(means)).mean()), 3), "change": round(change, 3)}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))


def identity(frames: list[Image], character: Image, pool) -> dict[str, Any]:
    """ArcFace similarity of the character's face and the output's faces (frames without a face skipped)."""
    from facecast.neural.faceswap import TEMPLATE_112, align_crop, prepare_arcface
    from facecast.tracking.face_mesh import track_image

    arcface = pool.get("w600k_r50")

    def embed(image: Image) -> np.ndarray | None:
        faces = track_image(image)
        if not faces:
            return None
        crop, _ = align_crop(image, faces[0].landmarks, TEMPLATE_112, 112)
        return arcface.run({"input.1": prepare_arcface(crop)}, "batch")["683"]

    reference = embed(character)
    if reference is None:
        return {"identity": None, "identity_note": "no face found in the character image"}
    picks = np.unique(np.linspace(0, len(frames) - 1, min(IDENTITY_SAMPLES, len(frames))).round().astype(int))
    scores = [cosine(reference, e) for e in (embed(frames[i]) for i in picks) if e is not None]
    if not scores:
        return {"identity": None, "identity_note": "no face found in the output"}
    return {"identity": round(float(np.mean(scores)), 4), "identity_min": round(min(scores), 4), "faces": len(scores)}


def quality_report(frames: list[Image], character: Path | None, models_dir: Path, pool_factory) -> dict[str, Any]:
    report: dict[str, Any] = {"frames": len(frames), **flicker(frames)}
    if character is None:
        report["identity_note"] = "this job has no character image"
    elif not (models_dir / "w600k_r50.onnx").is_file():
        report["identity_note"] = f"not measured: w600k_r50.onnx is not in {models_dir} (facecast models download)"
    else:
        image = cast("Image | None", cv2.imread(str(character), cv2.IMREAD_COLOR))
        report.update(identity(frames, image, pool_factory()) if image is not None else {"identity": None})
    return report
