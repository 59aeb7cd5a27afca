"""Full-size LivePortrait replicas from LivePortrait's own network code (the `mimic-head` package).

The modules are built from the reference's `models.yaml` with seeded random weights and exported under
the hub's file and tensor names (warmshao/FasterLivePortrait, `liveportrait_onnx/`): the real graphs
at the real cost. `build_modules(seed)` gives the same torch modules again, so a test can run the
reference algorithm with exactly the weights in the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from facecast.models.replicas import ReplicaReport, mark_replica

OPSET = 20  # the hub export's opset: its warping graph has two 5-D GridSample nodes
# Published parameter counts (millions, 2 decimals): the LivePortrait paper's module table. The
# stitching and retargeting networks are published as one 0.23 M module; the three files are
# compared together (`STITCHING_FILES`).
PUBLISHED_PARAMS_M = {
    "appearance_feature_extractor": 0.84,
    "motion_extractor": 28.12,
    "warping_spade": 45.53 + 55.37,  # warping module followed by the SPADE generator
}
PUBLISHED_STITCHING_M = 0.23
STITCHING_FILES = ("stitching", "stitching_eye", "stitching_lip")
PUBLISHED_ROUNDING_M = 0.01
MOTION_OUTPUTS = ("pitch", "yaw", "roll", "t", "exp", "scale", "kp")


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the replicas extra is missing
        raise RuntimeError(
            "building replicas needs PyTorch: pip install 'facecast[replicas]'; and for LivePortrait its "
            "network code: pip install --no-deps mimic-head==0.1.5"
        ) from exc
    return torch


def model_params() -> dict:
    """The reference's architecture parameters (mimic_head/config/models.yaml, key model_params)."""
    import yaml

    try:
        import mimic_head
    except ImportError as exc:
        raise RuntimeError(
            "building LivePortrait replicas needs LivePortrait's network code: "
            "pip install --no-deps mimic-head==0.1.5 (--no-deps: its declared dependencies are a gradio UI and "
            "opencv-python, which would overwrite facecast's opencv-contrib-python)"
        ) from exc
    path = Path(mimic_head.__file__).parent / "config" / "models.yaml"
    return yaml.safe_load(path.read_text())["model_params"]


@dataclass
class LivePortraitModules:
    """The reference torch modules, eval mode, float32 on the CPU."""

    appearance: object  # AppearanceFeatureExtractor
    motion: object  # MotionExtractor
    warping: object  # WarpingNetwork
    spade: object  # SPADEDecoder
    stitching: object  # StitchingRetargetingNetwork x3
    eye: object
    lip: object

    def retargeting_dict(self) -> dict:
        """The shape the reference wrapper expects for `stitching_retargeting_module`."""
        return {"stitching": self.stitching, "eye": self.eye, "lip": self.lip}


def build_modules(seed: int = 0) -> LivePortraitModules:
    """The seven reference modules with random weights; each module is seeded on its own so the
    same seed gives the same weights whatever is built before it."""
    torch = _torch()
    params = model_params()
    from mimic_head.modules.appearance_feature_extractor import AppearanceFeatureExtractor
    from mimic_head.modules.motion_extractor import MotionExtractor
    from mimic_head.modules.spade_generator import SPADEDecoder
    from mimic_head.modules.stitching_retargeting_network import StitchingRetargetingNetwork
    from mimic_head.modules.warping_network import WarpingNetwork

    def seeded(index: int, make):
        torch.manual_seed(seed * 1000 + index)
        module = make()
        _randomise_norm_statistics(module, torch)
        return module.eval()

    srm = params["stitching_retargeting_module_params"]
    return LivePortraitModules(
        appearance=seeded(0, lambda: AppearanceFeatureExtractor(**params["appearance_feature_extractor_params"])),
        motion=_calibrate_motion_heads(seeded(1, lambda: MotionExtractor(**params["motion_extractor_params"])), torch),
        warping=seeded(2, lambda: WarpingNetwork(**params["warping_module_params"])),
        spade=seeded(3, lambda: SPADEDecoder(**params["spade_generator_params"])),
        stitching=seeded(4, lambda: StitchingRetargetingNetwork(**srm["stitching"])),
        eye=seeded(5, lambda: StitchingRetargetingNetwork(**srm["eye"])),
        lip=seeded(6, lambda: StitchingRetargetingNetwork(**srm["lip"])),
    )


def _calibrate_motion_heads(motion, torch):
    """Scale the motion extractor's random output heads to the ranges a trained model produces (scale
    about 1.5, canonical keypoints within +-1, expression and translation a few hundredths), so the
    keypoints, the warp and FP16 arithmetic downstream see realistic values instead of a negative or
    near-zero scale."""
    heads = motion.detector
    with torch.no_grad():
        heads.fc_scale.weight.mul_(0.05)
        heads.fc_scale.bias.fill_(1.5)
        heads.fc_kp.weight.mul_(0.6)
        heads.fc_kp.bias.mul_(0.6)
        for head in (heads.fc_exp, heads.fc_t):
            head.weight.mul_(0.08)
            head.bias.mul_(0.08)
        for head in (heads.fc_pitch, heads.fc_yaw, heads.fc_roll):  # head angles that vary with the image
            head.weight.mul_(4.0)
    return motion


def _randomise_norm_statistics(module, torch) -> None:
    """BatchNorm running statistics of a fresh module are 0/1 (an identity in eval mode); give them
    plausible values so the replica computes what a trained network would have to."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            with torch.no_grad():
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _wrappers():
    import torch  # present: the caller has been through _torch()

    class Motion(torch.nn.Module):
        """The motion extractor with its dict output flattened in the export's named outputs."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, img):
            out = self.inner(img)
            return tuple(out[k] for k in MOTION_OUTPUTS)

    class WarpingSpade(torch.nn.Module):
        """warping_spade.onnx = WarpingNetwork followed by the SPADE generator on its `out`."""

        def __init__(self, warping, spade):
            super().__init__()
            self.warping, self.spade = warping, spade

        def forward(self, feature_3d, kp_driving, kp_source):
            return self.spade(feature=self.warping(feature_3d, kp_driving=kp_driving, kp_source=kp_source)["out"])

    return Motion, WarpingSpade


def _without_spectral_norm(torch, module):
    """A copy with every spectral norm folded into its weight. In eval mode the reference divides each
    weight by the same stored sigma on every call; exported as it is, the graph would carry each SPADE
    weight twice (the raw weight and a reshaped copy for the sigma product) and recompute sigma per frame."""
    import copy

    from torch.nn.utils.spectral_norm import SpectralNorm

    module = copy.deepcopy(module)
    for m in module.modules():
        if any(isinstance(hook, SpectralNorm) for hook in m._forward_pre_hooks.values()):
            torch.nn.utils.remove_spectral_norm(m)
    return module


def _export(
    torch, module, args, path: Path, inputs: list[str], outputs: list[str], description: str, seed: int
) -> None:
    import onnx

    tmp = path.with_name(f".{path.name}.partial")
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=inputs,
            output_names=outputs,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
        )
    model = onnx.load(str(tmp))
    mark_replica(model, description, seed)
    onnx.save(model, str(tmp))
    tmp.replace(path)  # complete files only, under the final name


def build(out_dir: Path, seed: int = 0, log=print) -> list[ReplicaReport]:
    """Write the six LivePortrait replicas into out_dir/liveportrait_onnx/ and report their size and cost."""
    import warnings

    torch = _torch()
    from facecast.models.replicas.cost import onnx_cost

    folder = Path(out_dir) / "liveportrait_onnx"
    folder.mkdir(parents=True, exist_ok=True)
    m = build_modules(seed)
    Motion, WarpingSpade = _wrappers()
    img = torch.rand(1, 3, 256, 256)
    kp = torch.randn(1, 21, 3) * 0.1
    jobs = [
        ("appearance_feature_extractor", m.appearance, (img,), ["img"], ["output"]),
        ("motion_extractor", Motion(m.motion), (img,), ["img"], list(MOTION_OUTPUTS)),
        (
            "warping_spade",
            _without_spectral_norm(torch, WarpingSpade(m.warping, m.spade)),
            (torch.randn(1, 32, 16, 64, 64), kp, kp * 0.9),
            ["feature_3d", "kp_driving", "kp_source"],
            ["out"],
        ),
        ("stitching", m.stitching, (torch.randn(1, 126),), ["input"], ["output"]),
        ("stitching_eye", m.eye, (torch.randn(1, 66),), ["input"], ["output"]),
        ("stitching_lip", m.lip, (torch.randn(1, 65),), ["input"], ["output"]),
    ]
    reports = []
    for name, module, args, inputs, outputs in jobs:
        path = folder / f"{name}.onnx"
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
            _export(
                torch,
                module.eval(),
                args,
                path,
                inputs,
                outputs,
                f"LivePortrait {name}: reference architecture (mimic-head 0.1.5), random weights",
                seed,
            )
        params, gflops = onnx_cost(path)
        log(
            f"  {path.relative_to(out_dir)}: {params / 1e6:.3f} M params, {gflops:.1f} GFLOPs "
            f"({time.perf_counter() - start:.0f} s)"
        )
        published = PUBLISHED_PARAMS_M.get(name)
        reports.append(
            ReplicaReport(
                file=str(path.relative_to(out_dir)),
                params=params,
                gflops=gflops,
                published_params=round(published * 1e6) if published else None,
                published_gflops=None,
                note="LivePortrait's own architecture (mimic-head), seeded random weights",
                published_rounding=PUBLISHED_ROUNDING_M if published else 0.0,
            )
        )
    stitching = [r for r in reports if Path(r.file).stem in STITCHING_FILES]
    reports.append(
        ReplicaReport(
            file="liveportrait_onnx/stitching*.onnx (3 files)",
            params=sum(r.params for r in stitching),
            gflops=sum(r.gflops for r in stitching),
            published_params=round(PUBLISHED_STITCHING_M * 1e6),
            published_gflops=None,
            note="LivePortrait's own architecture (mimic-head), seeded random weights",
            published_rounding=PUBLISHED_ROUNDING_M,
        )
    )
    return reports
