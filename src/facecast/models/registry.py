"""The model files each neural effect needs: where they live, where they come from, their checksums
and licences. Laid out as the hub publishes them, so files downloaded by hand work too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.paths import user_data_dir

_LP_HUB = "https://huggingface.co/warmshao/FasterLivePortrait/resolve/main/liveportrait_onnx/"
LIVEPORTRAIT_LICENCE = (
    "LivePortrait (KwaiVGI), MIT licence; ONNX export by warmshao/FasterLivePortrait. "
    "https://github.com/KwaiVGI/LivePortrait/blob/main/LICENSE"
)
INSIGHTFACE_LICENCE = (
    "InsightFace models (inswapper_128, buffalo_l w600k_r50) are released for NON-COMMERCIAL research "
    "use only. You may not use them, or what you make with them, commercially (that includes "
    "monetised streams) without a licence from InsightFace. https://github.com/deepinsight/insightface"
)


class ModelsConfig(StrictModel):
    dir: Path | None = Field(None, description="folder of model weights; null = the per-user data folder")

    def resolved_dir(self) -> Path:
        return self.dir if self.dir is not None else user_data_dir() / "models"


@dataclass(frozen=True, slots=True)
class ModelFile:
    key: str  # the contract key (facecast.engines.contracts)
    path: str  # relative to models.dir
    url: str
    sha256: str
    size: int | None  # bytes; None where no published size was available to us (the sha256 still decides)


@dataclass(frozen=True, slots=True)
class ModelSet:
    name: str
    used_by: str
    licence: str
    non_commercial: bool
    files: tuple[ModelFile, ...]


def _lp(name: str, sha256: str) -> ModelFile:
    return ModelFile(f"liveportrait/{name}", f"liveportrait_onnx/{name}.onnx", _LP_HUB + f"{name}.onnx", sha256, None)


# Checksums: the LivePortrait ones are those of the FasterLivePortrait ONNX export as mirrored by
# several projects; the InsightFace ones are those of the files InsightFace released.
MODEL_SETS: dict[str, ModelSet] = {
    "liveportrait": ModelSet(
        "liveportrait",
        "effect animate, backend liveportrait",
        LIVEPORTRAIT_LICENCE,
        False,
        (
            _lp("appearance_feature_extractor", "dbbbb44e4bba12302d7137bdee6a0f249b45fb6dd879509fd5baa27d70c40e32"),
            _lp("motion_extractor", "99d4b3c9dd3fd301910de9415a29560e38c0afaa702da51398281376cc36fdd3"),
            _lp("warping_spade", "d6ee9af4352b47e88e0521eba6b774c48204afddc8d91c671a5f7b8a0dfb4971"),
            _lp("stitching", "43598e9747a19f4c55d8e1604fb7d7fa70ab22377d129cb7d1fe38c9a737cc79"),
            _lp("stitching_eye", "251004fe4a994c57c8cd9f2c50f3d89feb289fb42e6bc3af74470a3a9fa7d83b"),
            _lp("stitching_lip", "1ca793eac4b0dc5464f1716cdaa62e595c2c2272c9971a444e39c164578dc34b"),
        ),
    ),
    "inswapper": ModelSet(
        "inswapper",
        "effect swap, backend inswapper",
        INSIGHTFACE_LICENCE,
        True,
        (
            ModelFile(
                "inswapper_128",
                "inswapper_128.onnx",
                "https://huggingface.co/ezioruan/inswapper_128.onnx/resolve/main/inswapper_128.onnx",
                "e4a3f08c753cb72d04e10aa0f7dbe3deebbf39567d4ead6dce08e98aa49e16af",
                554_253_681,
            ),
            ModelFile(
                "w600k_r50",
                "w600k_r50.onnx",
                "https://huggingface.co/public-data/insightface/resolve/main/models/buffalo_l/w600k_r50.onnx",
                "4c06341c33c2ca1f86781dab0e829f88ad5b64be9fba56e56bc9ebdefc619e43",
                174_383_860,
            ),
        ),
    ),
}


def find(name: str) -> list[tuple[ModelSet, ModelFile]]:
    """A set name ('liveportrait'), a file key ('inswapper_128') or a file name ('w600k_r50.onnx')."""
    if name in MODEL_SETS:
        s = MODEL_SETS[name]
        return [(s, f) for f in s.files]
    for s in MODEL_SETS.values():
        for f in s.files:
            if name in (f.key, f.path, Path(f.path).name, Path(f.path).stem):
                return [(s, f)]
    known = ", ".join([*MODEL_SETS, *(Path(f.path).stem for s in MODEL_SETS.values() for f in s.files)])
    raise KeyError(f"unknown model {name!r}; known: {known}")


@dataclass(frozen=True, slots=True)
class PlacedByHand:
    """A model facecast can run but does not download: no published checksum it could verify is
    known to it, so the user places the file in models.dir and answers for its origin."""

    key: str  # the contract key (facecast.engines.contracts)
    path: str  # relative to models.dir
    used_by: str
    source: str  # where the published weights are
    licence: str
    non_commercial: bool


_ENHANCER = "effect swap, enhance.model"
PLACED_BY_HAND: dict[str, PlacedByHand] = {
    m.key: m
    for m in (
        PlacedByHand(
            "gfpgan_1.4",
            "gfpgan_1.4.onnx",
            _ENHANCER,
            "GFPGAN v1.4 (TencentARC), an ONNX export such as facefusion/models-3.0.0 on the Hugging Face hub",
            "GFPGAN, Apache-2.0 licence. https://github.com/TencentARC/GFPGAN/blob/master/LICENSE",
            False,
        ),
        PlacedByHand(
            "codeformer",
            "codeformer.onnx",
            _ENHANCER,
            "CodeFormer (sczhou), an ONNX export with inputs x and w",
            "CodeFormer, S-Lab License 1.0: NON-COMMERCIAL use only. https://github.com/sczhou/CodeFormer",
            True,
        ),
        PlacedByHand(
            "gpen_bfr_256",
            "gpen_bfr_256.onnx",
            _ENHANCER,
            "GPEN-BFR-256 (yangxy/GPEN), an ONNX export",
            "GPEN: NON-COMMERCIAL use only (its authors' terms). https://github.com/yangxy/GPEN",
            True,
        ),
        PlacedByHand(
            "gpen_bfr_512",
            "gpen_bfr_512.onnx",
            _ENHANCER,
            "GPEN-BFR-512 (yangxy/GPEN), an ONNX export",
            "GPEN: NON-COMMERCIAL use only (its authors' terms). https://github.com/yangxy/GPEN",
            True,
        ),
        PlacedByHand(
            "restoreformer_pp",
            "restoreformer_plus_plus.onnx",
            _ENHANCER,
            "RestoreFormer++ (wzhouxiff/RestoreFormerPlusPlus), an ONNX export",
            "RestoreFormer++, Apache-2.0 licence. https://github.com/wzhouxiff/RestoreFormerPlusPlus",
            False,
        ),
    )
}
