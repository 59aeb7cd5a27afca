"""facecast as an installed package: the wheel, its metadata, and the command run from it.

The wheel is built from a copy of what an sdist holds (so the checkout gets no build/ folder) and
installed by pip into a brand-new virtual environment. Its dependencies are not downloaded again:
the distributions its metadata asks for (base requirements only, followed recursively, markers
evaluated) are linked in from this test run's own environment, and nothing else is. So the run
proves that the declared dependencies, and only those, are enough: a runtime import missing from
`[project].dependencies` fails here. onnxruntime is not among them (it is the `cpu` extra), so
this is also a plain `pip install facecast`. The command runs from a folder outside the checkout,
with nothing of the checkout on sys.path.
"""

from __future__ import annotations

import base64
import email.parser
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[1]
BUNDLED = ("facecast/assets/characters/astronaut.png", "facecast/assets/characters/README.md")
EXTRAS = {"cpu", "gpu", "diffusion", "ray", "replicas", "spout", "all"}


# -- the wheel ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp_path_factory.mktemp("dist")
    # No build isolation: the build backend comes from the test dependencies (no download here).
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet"]
    result = subprocess.run([*pip_wheel, "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    (found,) = dist.glob("facecast-*.whl")
    return found


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(zf.read(name).decode())


def _requirements(meta: email.message.Message, extra: str | None) -> dict[str, Requirement]:
    """The requirements that apply with `extra` (None: the base ones), by canonical name; markers
    other than the extra are evaluated for Windows, so the Windows-only ones count."""
    found: dict[str, Requirement] = {}
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        marker = req.marker
        in_extra = marker is not None and "extra" in str(marker)
        if in_extra != (extra is not None):
            continue
        if extra is not None and marker is not None and not marker.evaluate({"extra": extra, "sys_platform": "win32"}):
            continue
        found[canonicalize_name(req.name)] = req
    return found


def test_the_wheel_carries_the_bundled_character_and_every_package_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert set(BUNDLED) <= names, sorted(n for n in names if "assets" in n)
        packaged = zf.read("facecast/assets/characters/astronaut.png")
    assert packaged == (REPO / "src" / BUNDLED[0]).read_bytes()
    # Every file of the package in the checkout (the panel's page, py.typed, ...), but caches and
    # editor leftovers, is in the wheel: a new data file without a package-data entry fails here.
    src = REPO / "src"
    in_checkout = {
        p.relative_to(src).as_posix()
        for p in (src / "facecast").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".orig", ".rej", ".swp")
    }
    assert in_checkout - names == set()
    assert not [n for n in names if n.startswith(("tests/", "tools/", "assets/")) or n.endswith(".orig")]


def test_the_wheel_metadata_declares_every_extra_with_its_pins_and_markers(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert set(meta.get_all("Provides-Extra") or []) == EXTRAS
    requires_python = SpecifierSet(meta["Requires-Python"])
    assert "3.11.7" in requires_python and "3.12.9" in requires_python
    assert "3.13.0" not in requires_python  # mediapipe 0.10.21 has no wheel for 3.13

    base = _requirements(meta, None)
    assert str(base["mediapipe"].specifier) == "==0.10.21"
    assert "2.0" not in base["numpy"].specifier and "1.26.4" in base["numpy"].specifier
    assert "5.0" not in base["protobuf"].specifier and "1.18.0" not in base["onnx"].specifier
    for runtime in (
        "psutil",
        "pydantic",
        "pyyaml",
        "av",
        "opencv-contrib-python",
        "fastapi",
        "uvicorn",
        "httpx",
        "pynput",
        "ndi-python",
        "pyvirtualcam",
        "pillow",
        "websockets",
        "python-multipart",
    ):
        assert runtime in base, runtime
    # Neither onnxruntime build in the base: `gpu` must not drag the CPU build in beside it.
    assert not {"onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-cu13", "torch"} & set(base)

    assert set(_requirements(meta, "cpu")) == {"onnxruntime"}

    gpu = _requirements(meta, "gpu")
    assert set(gpu) == {"onnxruntime-gpu", "tensorrt-cu13", "nvidia-ml-py"}
    assert str(gpu["onnxruntime-gpu"].specifier) == "~=1.31.1" and gpu["onnxruntime-gpu"].extras == {"cuda", "cudnn"}
    trt = gpu["tensorrt-cu13"].specifier  # the TensorRT major the onnxruntime-gpu 1.31 provider links (10)
    assert "10.16.1.11" in trt and "11.0.0" not in trt and "9.0" not in trt

    (spout,) = [Requirement(r) for r in meta.get_all("Requires-Dist") or [] if r.lower().startswith("spoutgl")]
    assert spout.marker is not None
    assert spout.marker.evaluate({"extra": "spout", "sys_platform": "win32"})
    assert not spout.marker.evaluate({"extra": "spout", "sys_platform": "linux"})
    assert not spout.marker.evaluate({"extra": "", "sys_platform": "win32"})  # only with the extra

    assert "torch" in _requirements(meta, "replicas")
    assert {"diffusers", "transformers", "accelerate", "torch"} <= set(_requirements(meta, "diffusion"))
    assert "4.0" not in _requirements(meta, "ray")["ray"].specifier
    (everything,) = _requirements(meta, "all").values()
    assert everything.name == "facecast" and everything.extras == EXTRAS - {"all", "gpu"}


def test_the_reference_packages_are_pinned_where_the_docs_say() -> None:
    # mimic-head cannot be an extra (it must be installed --no-deps): the pin lives in
    # requirements-reference.txt, and pyproject's `replicas` comment gives the same command.
    pins = [line.split("#")[0].strip() for line in (REPO / "requirements-reference.txt").read_text().splitlines()]
    assert "mimic-head==0.1.5" in pins
    assert "pip install --no-deps mimic-head==0.1.5" in (REPO / "pyproject.toml").read_text()


# -- the wheel installed into a new environment ---------------------------------------------------


def _closure(requirements: list[Requirement]) -> list[importlib.metadata.Distribution]:
    """The installed distributions that satisfy `requirements`, followed through their own."""
    environment = {key: str(value) for key, value in default_environment().items()}
    todo = [(req, "") for req in requirements]
    seen: set[tuple[str, frozenset[str]]] = set()
    found: dict[str, importlib.metadata.Distribution] = {}
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({**environment, "extra": extra}):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(req.name)  # PackageNotFoundError names a missing one
        assert req.specifier.contains(dist.version, prereleases=True), f"{req} but {dist.version} is installed"
        found[key[0]] = dist
        todo += [(Requirement(r), e) for r in dist.requires or [] for e in ("", *req.extras)]
    return list(found.values())


def _link(dist: importlib.metadata.Distribution, site: Path) -> None:
    """Symlink a distribution's files into `site`, whole folders where the folder is its own."""
    root = Path(str(dist.locate_file("")))
    paths = [PurePosixPath(str(f)) for f in dist.files or [] if not str(f).startswith("..")]

    def place(prefix: tuple[str, ...], entries: list[tuple[str, ...]]) -> None:
        heads = sorted({e[len(prefix)] for e in entries if len(e) > len(prefix)})
        for head in heads:
            rel = (*prefix, head)
            src, dst = root.joinpath(*rel), site.joinpath(*rel)
            namespace = (
                src.is_dir()
                and not (src / "__init__.py").exists()
                and not head.endswith((".dist-info", ".libs", ".data"))
                and len(rel) == 1
            )
            if namespace:  # shared by several distributions (google/, mpl_toolkits/): only this one's part
                dst.mkdir(exist_ok=True)
                place(rel, [e for e in entries if e[: len(rel)] == rel])
            elif not dst.exists() and not dst.is_symlink():
                dst.symlink_to(src, target_is_directory=src.is_dir())

    place((), [p.parts for p in paths])


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel installed by pip and exactly its declared (base) dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    base = list(_requirements(_metadata(wheel), None).values())
    for dist in _closure(base):
        _link(dist, site)
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    result = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, f"the new environment's requirements are not met:\n{check.stdout}{check.stderr}"
    return venv


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "FACECAST_"))}
    env.pop("DISPLAY", None)
    env.update(
        HOME=str(tmp / "home"), XDG_DATA_HOME=str(tmp / "data"), XDG_CACHE_HOME=str(tmp / "cache"), PYTHONNOUSERSITE="1"
    )
    return env


def test_the_installed_package_is_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    probe = (
        "import importlib.util, json, sys, facecast; print(json.dumps({'file': facecast.__file__, "
        "'path': sys.path, 'onnxruntime': importlib.util.find_spec('onnxruntime') is not None}))"
    )
    result = subprocess.run(
        [str(installed / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(tmp_path),
        timeout=60,
        check=True,
    )
    seen = json.loads(result.stdout)
    assert Path(seen["file"]).resolve().is_relative_to(installed.resolve()), seen["file"]
    checkout = [p for p in seen["path"] if p and Path(p).resolve().is_relative_to(REPO)]
    assert not checkout, checkout
    assert not seen["onnxruntime"]  # a plain install: no onnxruntime build chosen


def test_the_installed_command_runs_the_bundled_character_outside_the_checkout(installed: Path, tmp_path: Path) -> None:
    facecast = installed / "bin" / "facecast"
    usage = subprocess.run(
        [str(facecast), "--help"], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=60
    )
    assert usage.returncode == 0 and "usage: facecast" in usage.stdout, usage.stderr
    run = ["run", "--frames", "60", "--set", "capture.source=synthetic", "--set", f"control.port={free_port()}"]
    result = subprocess.run(
        [str(facecast), *run], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=180
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "frame limit reached (60 frames)" in log
    bundled = re.search(r"characters: 1 loaded from (\S+)", log)
    assert bundled and Path(bundled.group(1)).resolve().is_relative_to(installed.resolve()), log
    assert re.search(r"\| faces 1 \|", log), log  # the synthetic driver's face (the bundled portrait) was tracked
    assert not (tmp_path / "data" / "facecast" / "characters").exists()  # reading writes nothing

    doctor = subprocess.run(
        [str(facecast), "doctor"], capture_output=True, text=True, cwd=tmp_path, env=_env(tmp_path), timeout=120
    )
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"({installed / 'bin' / 'python'})" in doctor.stdout
    assert "mediapipe 0.10.21" in doctor.stdout
    assert "onnxruntime: not installed" in doctor.stdout


def test_nothing_is_written_into_the_installed_package(installed: Path) -> None:
    # After the runs above (module scope: this test runs after them), the package folder holds
    # exactly what pip installed.
    site = next((installed / "lib").glob("python3*/site-packages"))
    record = (next(site.glob("facecast-*.dist-info")) / "RECORD").read_text().splitlines()
    recorded = {line.split(",")[0] for line in record}
    present = {
        str(p.relative_to(site)) for p in (site / "facecast").rglob("*") if p.is_file() and "__pycache__" not in p.parts
    }
    assert present <= recorded, sorted(present - recorded)
    digests = {line.split(",")[0]: line.split(",")[1] for line in record if line.split(",")[1]}
    for name in BUNDLED:
        algo, _, expected = digests[name].partition("=")
        actual = hashlib.new(algo, (site / name).read_bytes()).digest()
        assert base64.urlsafe_b64encode(actual).rstrip(b"=").decode() == expected, name


# -- native log lines (facecast.native_logs) ------------------------------------------------------
# Kept here with the other "how the installed command behaves" checks: what a streamer's terminal
# shows when MediaPipe starts.

NATIVE_NOISE = re.compile(
    r"^([IW]\d{4} \d\d:\d\d:\S+ +\d+ \S+:\d+\]|INFO: Created TensorFlow Lite|WARNING: All log)", re.M
)

TRACK_THE_PORTRAIT = """
import logging, os, sys
from facecast import native_logs
native_logs.install(sys.argv[1])
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
import cv2
from facecast.assets import default_portrait
from facecast.tracking.face_mesh import FaceTracker, TrackingConfig
tracker = FaceTracker(TrackingConfig(), static_images=True)
logging.getLogger("probe").info("faces found: %d", len(tracker.detect(cv2.imread(str(default_portrait())))))
tracker.close()
os.write(2, b"E0000 00:00:1796200000.000000   77 probe.cc:1] a native error line\\n")
"""


def _python(code: str, *args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=tmp,
        env=_env(tmp) | {"PYTHONPATH": str(REPO / "src")},
        timeout=120,
    )


def test_mediapipe_start_up_lines_stay_off_the_terminal_unless_debug(tmp_path: Path) -> None:
    debug = _python(TRACK_THE_PORTRAIT, "debug", tmp=tmp_path)
    assert debug.returncode == 0, debug.stderr
    assert NATIVE_NOISE.search(debug.stderr), debug.stderr  # the lines are really there unfiltered

    quiet = _python(TRACK_THE_PORTRAIT, "info", tmp=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert not NATIVE_NOISE.search(quiet.stderr), quiet.stderr
    assert "INFO probe: faces found: 1" in quiet.stderr  # Python's own log goes on
    assert "probe.cc:1] a native error line" in quiet.stderr  # native errors still show


def test_a_native_crash_keeps_its_last_line(tmp_path: Path) -> None:
    crash = """
import os
from facecast import native_logs
native_logs.install("info")
os.write(2, b"W0000 00:00:1796200000.000000   77 probe.cc:9] start-up noise\\n")
os.write(2, b"F0000 00:00:1796200000.000000   77 probe.cc:10] Check failed: the last words\\n")
os.abort()
"""
    result = _python(crash, tmp=tmp_path)
    assert result.returncode == -6  # SIGABRT: the process died at once, its filter drained the pipe after it
    assert "Check failed: the last words" in result.stderr and "start-up noise" not in result.stderr


def test_the_line_filter_takes_lines_split_across_writes() -> None:
    from facecast.native_logs import LineFilter

    lines = LineFilter()
    out = b"".join(
        lines.feed(chunk)
        for chunk in (
            b"INFO: ",
            b"Created TensorFlow Lite XNNPACK delegate for CPU.",
            b"\n",  # TFLite writes it in 3 parts
            b"W0000 00:00:1796200397.782358    6525 inference_feedback_",
            b"manager.cc:114] Feedback...\n",
            b"INFO:     Started server process [42]\n",  # uvicorn-style, not TFLite: kept
            b"libpng warning: iCCP: known incorrect sRGB profile\n",
        )
    )
    assert out == b"INFO:     Started server process [42]\n" and lines.dropped == 3
    # A progress bar that never ends its line is shown as it comes, not held back.
    assert lines.feed(b"\r 42% rendering") == b"\r 42% rendering"
    assert lines.feed(b" 43%\n") == b" 43%\n"


def test_a_terminal_stays_a_terminal_for_python(tmp_path: Path) -> None:
    # Progress bars (render, downloads) draw only on a terminal: the filter must not hide it.
    import pty

    code = (
        "import os, sys; from facecast import native_logs; native_logs.install('info');"
        "print(sys.stderr.isatty(), os.isatty(2))"
    )
    master, slave = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            cwd=tmp_path,
            env=_env(tmp_path) | {"PYTHONPATH": str(REPO / "src")},
            timeout=60,
        )
    finally:
        os.close(slave)
        os.close(master)
    # Python's stderr is still the terminal; fd 2, where native code writes, is the filter's pipe.
    assert result.returncode == 0 and result.stdout.split() == ["True", "False"], result
