"""Full-size replicas of InsightFace's face swap pair: ArcFace w600k_r50 and inswapper_128.

- w600k_r50.onnx: the published IResNet-50 (the ArcFace paper's improved residual network, as
  InsightFace's recognition code describes it) written here from that description, with seeded
  random weights and random BatchNorm statistics, exported under the buffalo_l file's tensor names.
- inswapper_128.onnx: InsightFace never published inswapper's architecture. The replica is a
  **stand-in**: a plausible generator (conv encoder to 16x16, residual blocks modulated by the
  source latent through AdaIN, conv decoder back to 128x128, sigmoid output) whose widths and
  depths were solved numerically so that its contract, parameter count and cost match the published
  file's; it is not InsightFace's network. Its 512x512 `emap` is stored as the graph's last
  initializer, where InsightFace's code (and facecast's) reads it.

Both are test and benchmark material with random weights: they recognise and swap no one.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np

from facecast.models.replicas import ReplicaReport, mark_replica

OPSET = 17
ARCFACE_FILE, SWAPPER_FILE = "w600k_r50.onnx", "inswapper_128.onnx"

# Published figures, both given to 0.1 M. w600k_r50.onnx is 174,383,860 bytes (about 43.6 M float32
# weights); its cost is InsightFace's figure for IResNet-50 at 112x112 (6.3 G multiply-accumulates).
ARCFACE_PARAMS, ARCFACE_GFLOPS = 43_600_000, 12.6
# inswapper_128: 138.3 M parameters and 174.7 GFLOPs per call. The file (554,253,681 bytes) holds
# 138.3 M network weights plus the 512x512 emap (0.26 M floats) that the graph itself never reads.
SWAPPER_PARAMS, SWAPPER_GFLOPS = 138_300_000, 174.7

# IResNet-50: blocks per stage and stage widths (each stage starts with a stride-2 block).
IRESNET50_LAYERS, IRESNET_WIDTHS = (3, 4, 14, 3), (64, 128, 256, 512)
EMBEDDING = 512

# The inswapper stand-in's shape: encoder widths at 128/64/32 px, the bottleneck width and number of
# AdaIN residual blocks at 16 px, and extra 3x3 convs after the first conv of each decoder stage (32,
# 64, 128 px). Solved numerically, by searching widths in steps of 8, 4-9 blocks and 0-4 extra convs
# per stage for the closest match to both 138.3 M parameters and 174.7 GFLOPs (cost.py's convention:
# 2 x MACs of Conv/Gemm): 138.28 M and 174.64 GFLOPs as built. Three quarters of the parameters sit in the
# bottleneck blocks; 70% of the compute is at 32-128 px.
SWAPPER_WIDTHS = (240, 384, 768)
SWAPPER_BOTTLENECK, SWAPPER_BLOCKS = 1136, 4
SWAPPER_DECODER_EXTRA = (2, 2, 0)
EMAP_NAME = "emap"


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the replicas extra is missing
        raise RuntimeError("building replicas needs PyTorch: pip install 'facecast[replicas]'") from exc
    return torch


def _networks():
    """The two torch networks (defined here so importing this module does not import torch)."""
    import torch  # present: the caller has been through _torch()

    nn, F = torch.nn, torch.nn.functional

    class IBasicBlock(nn.Module):
        """BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the (projected) input; no activation after the sum."""

        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
            self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
            self.prelu = nn.PReLU(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
                )

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
            return out + identity

    class IResNet(nn.Module):
        """ArcFace's IResNet: 3x3 stem (conv, BN, PReLU), four stages, BN, dropout (off), FC to the
        embedding, BatchNorm1d on the features. 112x112 in, 7x7 before the FC."""

        def __init__(self, layers=IRESNET50_LAYERS, widths=IRESNET_WIDTHS, embedding: int = EMBEDDING) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
            self.prelu = nn.PReLU(widths[0])
            stages, inplanes = [], widths[0]
            for blocks, planes in zip(layers, widths, strict=False):
                stage = [IBasicBlock(inplanes, planes, 2)] + [IBasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
                stages.append(nn.Sequential(*stage))
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.bn2 = nn.BatchNorm2d(widths[-1], eps=1e-5)
            self.dropout = nn.Dropout(p=0.0)
            self.fc = nn.Linear(widths[-1] * 7 * 7, embedding)
            self.features = nn.BatchNorm1d(embedding, eps=1e-5)

        def forward(self, x):
            x = self.prelu(self.bn1(self.conv1(x)))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            x = self.dropout(torch.flatten(self.bn2(x), 1))
            return self.features(self.fc(x))

    class AdaIN(nn.Module):
        """Instance-normalise, then scale and shift each channel by a Linear map of the source latent."""

        def __init__(self, channels: int, latent: int = EMBEDDING) -> None:
            super().__init__()
            self.style = nn.Linear(latent, 2 * channels)

        def forward(self, x, latent):
            scale, shift = self.style(latent).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
            return F.instance_norm(x, eps=1e-5) * (1.0 + scale) + shift

    class StyleBlock(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
            self.norm1, self.norm2 = AdaIN(channels), AdaIN(channels)

        def forward(self, x, latent):
            y = F.leaky_relu(self.norm1(self.conv1(x), latent), 0.2)
            return x + self.norm2(self.conv2(y), latent)

    def conv_norm_act(cin: int, cout: int, stride: int = 1) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1), nn.InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2)]

    class SwapGenerator(nn.Module):
        """The inswapper stand-in: target [1,3,128,128] RGB 0..1 and source latent [1,512] -> RGB 0..1."""

        def __init__(
            self,
            widths=SWAPPER_WIDTHS,
            bottleneck=SWAPPER_BOTTLENECK,
            blocks=SWAPPER_BLOCKS,
            decoder_extra=SWAPPER_DECODER_EXTRA,
        ) -> None:
            super().__init__()
            w1, w2, w3 = widths
            self.encoder = nn.Sequential(
                nn.Conv2d(3, w1, 7, 1, 3),
                nn.InstanceNorm2d(w1, affine=True),
                nn.LeakyReLU(0.2),
                *conv_norm_act(w1, w2, 2),
                *conv_norm_act(w2, w3, 2),
                *conv_norm_act(w3, bottleneck, 2),
            )
            self.blocks = nn.ModuleList(StyleBlock(bottleneck) for _ in range(blocks))
            decoder, cin = [], bottleneck
            for cout, extra in zip((w3, w2, w1), decoder_extra, strict=False):
                decoder += [
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    *conv_norm_act(cin, cout),
                ]
                for _ in range(extra):
                    decoder += conv_norm_act(cout, cout)
                cin = cout
            self.decoder = nn.Sequential(*decoder)
            self.head = nn.Conv2d(w1, 3, 7, 1, 3)

        def forward(self, target, source):
            x = self.encoder(target * 2.0 - 1.0)
            for block in self.blocks:
                x = block(x, source)
            return torch.sigmoid(self.head(self.decoder(x)))

    return IResNet, SwapGenerator


def _init_arcface(net, torch) -> None:
    """Random weights a trained IResNet could have: He-initialised convs, BatchNorm with random affine
    parameters and random running statistics (so no BN is an identity), residual branches ending in
    a small BN scale so 24 blocks do not blow the activations up."""
    nn = torch.nn
    with torch.no_grad():
        for name, m in net.named_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.1, 0.35)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, (1.0 / m.in_features) ** 0.5)
                m.bias.normal_(0.0, 0.05)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                low, high = (0.1, 0.3) if name.endswith("bn3") else (0.7, 1.3)  # bn3 ends a residual branch
                m.weight.uniform_(low, high)
                m.bias.normal_(0.0, 0.1)
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)


def _init_swapper(net, torch) -> None:
    """He-initialised convs; AdaIN styles large enough that the source latent (unit length) moves
    every channel's scale and shift by about 0.5, as a trained swapper's identity code must."""
    nn = torch.nn
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, mode="fan_in", nonlinearity="leaky_relu")
                m.bias.normal_(0.0, 0.02)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.5)
                m.bias.normal_(0.0, 0.05)
            elif isinstance(m, nn.InstanceNorm2d):
                m.weight.uniform_(0.7, 1.3)
                m.bias.normal_(0.0, 0.1)
        net.head.weight.mul_(0.5)  # a sigmoid input of std ~1.5: the output spans 0..1 without saturating
        net.head.bias.zero_()


def build_networks(seed: int = 0):
    """(ArcFace IResNet-50, inswapper stand-in) torch modules with the replicas' weights, eval mode."""
    torch = _torch()
    IResNet, SwapGenerator = _networks()
    torch.manual_seed(seed * 1000 + 100)
    arcface = IResNet()
    _init_arcface(arcface, torch)
    torch.manual_seed(seed * 1000 + 101)
    swapper = SwapGenerator()
    _init_swapper(swapper, torch)
    return arcface.eval(), swapper.eval()


def random_emap(seed: int = 0) -> np.ndarray:
    """A 512x512 projection of roughly unit gain (Gaussian / sqrt(512)), like a learned identity map."""
    rng = np.random.default_rng(seed * 1000 + 102)
    return (rng.standard_normal((EMBEDDING, EMBEDDING)) / np.sqrt(EMBEDDING)).astype(np.float32)


def _rename_output(model, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in model.graph.output:
        if value.name == old:
            value.name = new


def _export(
    torch,
    module,
    args,
    path: Path,
    inputs: list[str],
    outputs: list[str],
    description: str,
    seed: int,
    dynamic_axes=None,
    emap: np.ndarray | None = None,
) -> None:
    import onnx
    from onnx import numpy_helper

    tmp = path.with_name(f".{path.name}.partial")
    # TorchScript refuses all-digit tensor names (ArcFace's output is "683"): export under a
    # placeholder and rename in the ModelProto.
    placeholders = [f"out{i}_{name}" if name.isdigit() else name for i, name in enumerate(outputs)]
    if dynamic_axes:
        dynamic_axes = {placeholders[outputs.index(k)] if k in outputs else k: v for k, v in dynamic_axes.items()}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer chatter
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=inputs,
            output_names=placeholders,
            opset_version=OPSET,
            dynamo=False,
            do_constant_folding=True,
            dynamic_axes=dynamic_axes,
        )
    model = onnx.load(str(tmp))
    for placeholder, name in zip(placeholders, outputs, strict=False):
        if placeholder != name:
            _rename_output(model, placeholder, name)
    if emap is not None:
        # Unused by the graph; appended after the export so it is the LAST initializer, where the
        # host code (InsightFace's and facecast's) looks for it.
        model.graph.initializer.append(numpy_helper.from_array(emap, EMAP_NAME))
    mark_replica(model, description, seed)
    onnx.save(model, str(tmp))
    tmp.replace(path)  # complete files only, under the final name


ARCFACE_NOTE = "IResNet-50, InsightFace's published ArcFace architecture, seeded random weights"
SWAPPER_NOTE = (
    "STAND-IN architecture (InsightFace never published inswapper's): matches its contract, parameter "
    "count and cost, not its network; seeded random weights; emap random, stored as the last initializer"
)


def build(out_dir: Path, seed: int = 0, log=print) -> list[ReplicaReport]:
    """Write w600k_r50.onnx and inswapper_128.onnx into out_dir and report their size and cost."""
    torch = _torch()
    from facecast.models.replicas.cost import onnx_cost

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arcface, swapper = build_networks(seed)
    jobs = [
        (
            ARCFACE_FILE,
            arcface,
            (torch.rand(1, 3, 112, 112) * 2 - 1,),
            ["input.1"],
            ["683"],
            {"input.1": {0: "N"}, "683": {0: "N"}},
            None,
            ARCFACE_PARAMS,
            ARCFACE_GFLOPS,
            ARCFACE_NOTE,
        ),
        (
            SWAPPER_FILE,
            swapper,
            (torch.rand(1, 3, 128, 128), torch.nn.functional.normalize(torch.randn(1, EMBEDDING))),
            ["target", "source"],
            ["output"],
            None,
            random_emap(seed),
            SWAPPER_PARAMS,
            SWAPPER_GFLOPS,
            SWAPPER_NOTE,
        ),
    ]
    reports = []
    for file, module, args, inputs, outputs, dynamic, emap, pub_params, pub_gflops, note in jobs:
        path = out_dir / file
        start = time.perf_counter()
        _export(torch, module, args, path, inputs, outputs, f"{file}: {note}", seed, dynamic, emap)
        params, gflops = onnx_cost(path)
        log(
            f"  {file}: {params / 1e6:.3f} M params (published {pub_params / 1e6:.1f} M), {gflops:.1f} GFLOPs "
            f"(published {pub_gflops}) ({time.perf_counter() - start:.0f} s)"
        )
        reports.append(
            ReplicaReport(
                file=file,
                params=params,
                gflops=gflops,
                published_params=pub_params,
                published_gflops=pub_gflops,
                note=note,
                published_rounding=0.1,
            )
        )
    return reports
