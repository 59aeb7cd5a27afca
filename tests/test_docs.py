"""The guides stay true: every command they show runs, every config snippet loads, every link lands.

What is checked, read from README.md and docs/*.md when the tests are collected (so a doc edited
tomorrow is checked tomorrow):

- Every line of a ```sh fence is one command (a trailing backslash continues it; `#` comments are
  bash's; the same command twice runs once). Each runs with bash, as a streamer would type it, in
  a *world*: a home folder of its own (HOME and the XDG folders point into it) holding a copy of
  the working tree, whose `.venv` links to the environment running this test (with install stamps
  of its own, so `make run` never reinstalls); no display; a control API port of its own in the
  copy's config.yaml; the files the docs name (`me.png`, `clip.mp4`, ...: FIXTURES below); and the
  ONNX test fixtures of tools/make_test_models.py as the model weights (real contracts, random
  weights: the commands and their flags run, the pictures they make are noise). A command must
  exit 0 without a traceback.
- Commands that cannot run here, that run until Ctrl+C, or that need the daemon are listed in ONE
  place, HANDLING: a regex on the command -> what to do and why. An entry no command matches any
  more fails (the table cannot rot), and so does a renamed flag or key in a command that runs.
- ```yaml fences are config snippets: each is merged over the defaults and validated by the real
  config model, like a config.yaml.
- Links to local files and to headings (#anchors) resolve; every picture in docs/images is shown
  by a doc and none is large.
- docs/CHARACTERS.md's transcript of `facecast character check` is what facecast says today, and
  the messages docs/TROUBLESHOOTING.md quotes are still worded that way in the code.

Other fences (```bash, ```powershell, ```text, plain ```) are not run: `sh` marks what runs here.
Runtime: about 2-3 minutes on 2 cores, nearly all of it in the commands themselves.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
RUNNING = "Ctrl+C to stop"  # the daemon's log line once it runs (facecast.daemon.run_daemon)


# -- reading the docs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fence:
    doc: Path
    line: int  # 1-based line of the first content line
    lang: str
    lines: tuple[str, ...]


_OPEN = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


def fences(doc: Path) -> list[Fence]:
    """The fenced code blocks of a markdown file, indented ones (in lists) included."""
    out: list[Fence] = []
    lines = doc.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, marker, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(marker[0] * len(marker)):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        out.append(Fence(doc, i + 2, lang, tuple(body)))
        i = j + 1
    return out


@dataclass(frozen=True)
class Command:
    doc: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(REPO)}:{self.line}"


def commands_of(fence: Fence) -> list[Command]:
    out, pending, start = [], "", 0
    for k, raw in enumerate(fence.lines):
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            start = fence.line + k
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        out.append(Command(fence.doc, start, (pending + line.strip()).strip()))
        pending = ""
    return out


def _without_comment(text: str) -> str:
    return re.sub(r"\s+#[^'\"]*$", "", text).strip()


def all_commands() -> list[Command]:
    seen: dict[str, Command] = {}
    for doc in DOCS:
        for fence in fences(doc):
            if fence.lang == "sh":
                for command in commands_of(fence):
                    # The same command twice (its comment aside) runs once.
                    seen.setdefault(" ".join(_without_comment(command.text).split()), command)
    return list(seen.values())


# -- what cannot simply run here: the one table ---------------------------------------------------


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Interrupt:
    """Runs until Ctrl+C: started, and once the daemon says it runs, stopped with SIGINT (as Ctrl+C
    does to the terminal's whole process group); it must then stop cleanly."""

    reason: str = "runs until Ctrl+C: started, then stopped with Ctrl+C (SIGINT) once it runs"


@dataclass(frozen=True)
class Bounded:
    """Runs with `args` appended (argparse takes the last value of a repeated flag)."""

    args: str
    reason: str


@dataclass(frozen=True)
class NeedsDaemon:
    reason: str = "talks to a running daemon: the world's daemon is started for it"


HANDLING: dict[str, Skip | Interrupt | Bounded | NeedsDaemon] = {
    r"^make test\b": Skip("runs the whole test suite, this test included; CI runs it itself"),
    r"^make (gpu|cpu)\b": Skip("swaps the onnxruntime build of the environment (and downloads it)"),
    r"\bpip (un)?install\b": Skip("changes the installed packages and downloads them (network)"),
    r"-m venv\b": Skip("creates a virtual environment (the test runs in the one it was started from)"),
    r"^(sudo|apt|apt-get|brew|winget|git clone|nvidia-smi)\b": Skip(
        "installs system packages, clones over the network or needs an NVIDIA driver"
    ),
    r"facecast models download\b": Skip("downloads hundreds of MB of model weights (network)"),
    r"facecast jobs submit generate\b": Skip("needs a diffusion model folder (a download of several GB)"),
    r"^make run\b": Interrupt(),
    r"facecast run\b(?!.*--(frames|seconds)\b)": Interrupt(),
    r"facecast run\b.*--frames\b": Bounded("--frames 60", "a run of hundreds of frames takes as long at 60 fps"),
    r"facecast run\b.*--seconds\b": Bounded("--seconds 3", "a run of many seconds takes them"),
    r"facecast bench\b|tools/benchmark\.py": Bounded(
        "--frames 20 --warmup 5 --rounds 1",
        "300 frames per run (and 5 rounds of 2 runs with --compare) take minutes on 2 cores; the "
        "commands' own flags and keys are what is checked",
    ),
    r"facecast ctl\b": NeedsDaemon(),
}


def handling(command: Command) -> Skip | Interrupt | Bounded | NeedsDaemon | None:
    for pattern, how in HANDLING.items():
        if re.search(pattern, command.text):
            return how
    return None


# -- the world the commands run in ----------------------------------------------------------------


def _synthetic_clip(path: Path, frames: int = 45) -> None:
    from facecast.capture.synthetic import synthetic_frames
    from tests.conftest import write_video

    write_video(path, [f.image for f in synthetic_frames(frames, 320, 240, 30.0)], 30.0, audio=True)


def _portrait_copy(path: Path) -> None:
    from facecast.assets import default_portrait

    shutil.copyfile(default_portrait(), path)


def _config(text: str):
    return lambda path: path.write_text(text, encoding="utf-8")


# Files the docs' commands name, as a streamer following them would have them.
FIXTURES = {
    "me.png": _portrait_copy,
    "clip.mp4": _synthetic_clip,
    "performance.mp4": _synthetic_clip,
    "take1.mp4": _synthetic_clip,
    "a.yaml": _config("capture: {width: 640, height: 480}\neffect: {active: passthrough}\n"),
    "b.yaml": _config("capture: {width: 640, height: 480}\neffect: {active: debug}\n"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _copy_tree(dst: Path) -> None:
    """The working tree as git sees it (tracked and new files, not ignored ones), as it is now."""
    listed = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, listed):
        src = REPO / name
        if src.is_file() and not src.is_symlink():
            target = dst / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _link_venv(world: Path) -> None:
    """`.venv/bin/facecast` etc. of the docs are the environment running this test: the world's .venv
    links to its parts, with install stamps of its own, so `make run` finds it installed (it is:
    this test imports from it) and never reinstalls it."""
    venv = world / ".venv"
    venv.mkdir()
    if sys.prefix != sys.base_prefix:
        for entry in Path(sys.prefix).iterdir():
            if not entry.name.startswith("."):
                (venv / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    else:
        bin_dir = venv / "bin"
        bin_dir.mkdir()
        (bin_dir / "python").symlink_to(sys.executable)
        for name, module in (("facecast", "facecast"), ("pip", "pip")):
            shim = bin_dir / name
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m {module} "$@"\n')
            shim.chmod(0o755)
    for stamp in (".installed", ".installed-test"):
        (venv / stamp).touch()


@dataclass
class World:
    root: Path
    env: dict[str, str]
    port: int
    daemon: subprocess.Popen | None = None
    daemon_log: list[str] = field(default_factory=list)

    def start_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            return
        characters = self.root / "world-characters"
        characters.mkdir(exist_ok=True)
        _portrait_copy(characters / "astronaut.png")
        import cv2

        image = cv2.imread(str(characters / "astronaut.png"))
        cv2.imwrite(str(characters / "astronaut-close.png"), image[0:320, 64:384])  # a second character
        self.daemon_log = []
        self.daemon = subprocess.Popen(
            [
                str(self.root / ".venv/bin/facecast"),
                "run",
                "--set",
                f"characters.dir={characters}",
                "--set",
                "jobs.enabled=false",
                "--set",
                "capture.width=640",
                "--set",
                "capture.height=480",
            ],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if not OutputPump(self.daemon, self.daemon_log, RUNNING).wait_seen(120):
            self.stop_daemon()
            raise AssertionError("the world's daemon did not start:\n" + "".join(self.daemon_log[-40:]))

    def stop_daemon(self) -> None:
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGINT)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        self.daemon = None


class OutputPump:
    """Collects a process's output lines on a thread, until the process closes it."""

    def __init__(self, proc: subprocess.Popen, sink: list[str], wanted: str) -> None:
        self.proc, self.sink, self.wanted = proc, sink, wanted
        self.seen = threading.Event()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.sink.append(line)
            if self.wanted in line:
                self.seen.set()

    def wait_seen(self, timeout: float) -> bool:
        """True once `wanted` appeared; False if the process ended or `timeout` passed first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.seen.is_set() and self.proc.poll() is None:
            self.seen.wait(0.2)
        return self.seen.is_set()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    # A home folder with the checkout in it, as a streamer has it (jobs read inputs from home).
    home = tmp_path_factory.mktemp("docs-world")
    root = home / "facecast"
    root.mkdir()
    _copy_tree(root)
    _link_venv(root)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_SESSION_TYPE", "FACECAST_CONFIG", "FACECAST_ASSETS")
    }
    env.update(
        HOME=str(home),
        XDG_DATA_HOME=str(home / ".local/share"),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        PYTHONUNBUFFERED="1",
    )
    # The world's config.yaml: the repository's, with a control API port of its own.
    port = _free_port()
    config_file = root / "config.yaml"
    data = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    data = data or {}
    data.setdefault("control", {})["port"] = port
    config_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    for name, make in FIXTURES.items():
        make(root / name)
    from tests.neural_fixtures import make_models

    make_models(home / ".local/share/facecast/models")  # models.dir's default: the per-user data folder
    w = World(root, env, port)
    yield w
    w.stop_daemon()


# -- the commands ----------------------------------------------------------------------------------


def _run(world: World, text: str, timeout: float = 300) -> tuple[int, str]:
    result = subprocess.run(
        ["bash", "-c", text], cwd=world.root, env=world.env, capture_output=True, text=True, timeout=timeout
    )
    return result.returncode, result.stdout + result.stderr


def _interrupted(world: World, text: str) -> tuple[int, str]:
    proc = subprocess.Popen(
        ["bash", "-c", text],
        cwd=world.root,
        env=world.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    out: list[str] = []
    pump = OutputPump(proc, out, RUNNING)
    try:
        if not pump.wait_seen(180):
            rc = proc.poll()
            return (-1 if rc is None else rc), "".join(out) + f"\n[docs test] it never printed {RUNNING!r}"
        time.sleep(1.0)  # a second of running frames
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(90)
        pump.thread.join(10)  # the last lines
        return proc.returncode, "".join(out)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _make_would_reinstall(world: World) -> bool:
    """`make run` reinstalls when the venv's stamp is older than the requirements: never in a test."""
    return (
        subprocess.run(
            ["make", "-q", ".venv/.installed"], cwd=world.root, env=world.env, capture_output=True
        ).returncode
        != 0
    )


COMMANDS = all_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {c.text[:60]}" for c in COMMANDS])
def test_command_in_the_docs_runs(command: Command, world: World):
    how = handling(command)
    if isinstance(how, Skip):
        pytest.skip(how.reason)
    if isinstance(how, NeedsDaemon):
        world.start_daemon()
    else:
        world.stop_daemon()  # it holds the world's control port, which `run` commands take
    text = command.text
    if isinstance(how, Bounded):
        text = _without_comment(text) + " " + how.args
    if text.startswith("make ") and _make_would_reinstall(world):
        pytest.skip(
            "the venv is older than requirements.txt/pyproject.toml: `make` would reinstall it; "
            "run `make run` once and then this test"
        )
    started = time.monotonic()
    rc, out = _interrupted(world, text) if isinstance(how, Interrupt) else _run(world, text)
    took = time.monotonic() - started
    context = f"{command.where}: {command.text}\n(exit status {rc} after {took:.1f} s)\n{out[-6000:]}"
    assert "Traceback (most recent call last)" not in out, context
    if isinstance(how, Interrupt) and text.startswith("make "):
        # make passes Ctrl+C to facecast and then dies of it itself, as in a terminal; facecast's own
        # clean stop is what counts.
        assert rc in (0, 2, 130, -signal.SIGINT) and "stopped in" in out, context
    else:
        assert rc == 0, context
    if isinstance(how, Interrupt):
        assert "SIGINT received" in out, context


def test_every_entry_of_the_handling_table_is_still_needed():
    texts = [c.text for c in COMMANDS]
    unused = [p for p in HANDLING if not any(re.search(p, t) for t in texts)]
    assert not unused, f"HANDLING entries no command in the docs matches any more (remove them): {unused}"


# -- config snippets -------------------------------------------------------------------------------

SNIPPETS = [(doc, f) for doc in DOCS for f in fences(doc) if f.lang in ("yaml", "yml")]


@pytest.mark.parametrize(
    "fence", [f for _, f in SNIPPETS], ids=[f"{f.doc.relative_to(REPO)}:{f.line}" for _, f in SNIPPETS]
)
def test_config_snippet_in_the_docs_is_a_valid_config(fence: Fence, tmp_path):
    from facecast.config import ConfigError, load_config

    path = tmp_path / "snippet.yaml"
    path.write_text("\n".join(fence.lines) + "\n", encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        pytest.fail(f"{fence.doc.relative_to(REPO)}:{fence.line}: the snippet is not a valid config:\n{exc}")


# -- links and pictures ------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    found: set[str] = set()
    in_fence = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if _OPEN.match(line):
            in_fence = not in_fence
        if not in_fence and (m := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)):
            base = slug(m.group(1))
            name, n = base, 1
            while name in found:
                name, n = f"{base}-{n}", n + 1
            found.add(name)
    return found


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _prose(doc: Path) -> str:
    """The doc without its code fences (a fence may show link-like text that is not a link)."""
    kept, in_fence = [], False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if _OPEN.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            kept.append(line)
    return "\n".join(kept)


def test_local_links_and_anchors_in_the_docs_resolve():
    broken = []
    for doc in DOCS:
        for target in _LINK.findall(_prose(doc)):
            if re.match(r"^[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            path = (doc.parent / file_part).resolve() if file_part else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_doc_pictures_are_used_and_small():
    images = sorted((REPO / "docs" / "images").glob("*.png"))
    assert images, "docs/images is empty: run tools/make_doc_images.py"
    text = "\n".join(_prose(d) for d in DOCS)
    unused = [p.name for p in images if f"images/{p.name}" not in text]
    assert not unused, f"pictures no doc shows: {unused}"
    big = [f"{p.name} ({p.stat().st_size / 1024:.0f} KB)" for p in images if p.stat().st_size > 256 * 1024]
    assert not big, f"pictures over 256 KB (a palette PNG or a smaller size keeps the repository light): {big}"
    total = sum(p.stat().st_size for p in images)
    assert total < 1024 * 1024, f"docs/images holds {total / 1024:.0f} KB; keep the pictures small"


# -- docs/CHARACTERS.md's transcript ------------------------------------------------------------------


def _numbers_free(text: str) -> str:
    # Angles and sizes may differ by a unit across CPUs (MediaPipe's float arithmetic): compare wording.
    return re.sub(r"[+-]?\d+", "N", text)


def test_character_check_transcript_is_what_facecast_says(tmp_path):
    doc = REPO / "docs" / "CHARACTERS.md"
    blocks = [
        f for f in fences(doc) if f.lang == "text" and f.lines and f.lines[0].startswith("$ facecast character check")
    ]
    assert len(blocks) == 1, "CHARACTERS.md should hold one transcript starting with '$ facecast character check'"
    shown = blocks[0].lines
    args = shown[0].split()[4:]  # after "$ facecast character check"
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import make_doc_images
    finally:
        sys.path.remove(str(REPO / "tools"))
    make_doc_images.write_variants(tmp_path)
    from tests.conftest import run_facecast

    result = run_facecast("character", "check", *args, cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr  # the transcript shows refused images too
    real = [line for line in result.stdout.splitlines() if line.strip()]
    assert [_numbers_free(x) for x in real] == [_numbers_free(x) for x in shown[1:] if x.strip()], (
        "docs/CHARACTERS.md's transcript is out of date; facecast says now:\n" + "\n".join(real)
    )


# -- docs/TROUBLESHOOTING.md's messages ------------------------------------------------------------------

_LOG_PREFIX = re.compile(r"^(\d\d:\d\d:\d\d\s+)?(DEBUG|INFO|WARNING|ERROR)\s+[\w.]+:\s+")
_PERCENT = re.compile(r"%[-+ #0]*\d*(?:\.\d+)?[sdrfgx]")
_PROSE = re.compile(r"[A-Za-z]+(?: [A-Za-z]+){3,}")  # four words in a row: a sentence, not a value


@dataclass(frozen=True)
class Template:
    regex: re.Pattern  # the literal, every f-string field / %-placeholder a group that matches any text
    open_end: bool  # it ends with a placeholder


def _templates() -> list[Template]:
    """Every string literal in src/facecast as a regex anchored at the end of a line. Only
    templates with enough fixed wording to mean something are kept."""
    out = []
    for path in (REPO / "src" / "facecast").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                parts = [
                    p.value if isinstance(p, ast.Constant) and isinstance(p.value, str) else None for p in node.values
                ]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                parts = []
                pos = 0
                for m in _PERCENT.finditer(node.value):
                    parts += [node.value[pos : m.start()], None]
                    pos = m.end()
                parts.append(node.value[pos:])
            else:
                continue
            parts = [p for p in parts if p != ""]
            literal = [p for p in parts if p is not None]
            if sum(len(p) for p in literal) < 12 or len(max(literal, key=len, default="")) < 7:
                continue
            pattern = "".join(re.escape(p) if p is not None else "(.*?)" for p in parts)
            out.append(Template(re.compile(f"(?:{pattern})$"), parts[-1] is None))
    return out


def _worded_by_the_code(message: str, templates: list[Template], depth: int = 0) -> bool:
    """Some template ends the message. One that ends with a placeholder pins nothing by itself: then
    what that placeholder took must be a value (no sentence in it) or be worded by the code too."""
    for t in templates:
        m = t.regex.search(message)
        if m is None:
            continue
        if not t.open_end:
            return True
        tail = m.group(m.lastindex or 0) if m.lastindex else ""
        if not _PROSE.search(tail) or (
            depth < 3 and tail != message and _worded_by_the_code(tail, templates, depth + 1)
        ):
            return True
    return False


def test_troubleshooting_quotes_messages_as_the_code_words_them():
    doc = REPO / "docs" / "TROUBLESHOOTING.md"
    quoted = [
        (f.line + k, line.strip())
        for f in fences(doc)
        if f.lang == "text"
        for k, line in enumerate(f.lines)
        if line.strip()
    ]
    assert len(quoted) >= 10, "TROUBLESHOOTING.md should quote facecast's messages in ```text fences"
    templates = _templates()
    foreign = ("qt.qpa", "This application failed to start", "Available platform plugins", "[ERROR:")
    unknown = []
    for line_no, line in quoted:
        message = _LOG_PREFIX.sub("", line)
        if message.startswith(foreign):
            continue  # Qt's and OpenCV's own words, quoted as they print them
        if not _worded_by_the_code(message, templates):
            unknown.append(f"TROUBLESHOOTING.md:{line_no}: {line}")
    assert not unknown, "messages no string in src/facecast words that way any more:\n" + "\n".join(unknown)
