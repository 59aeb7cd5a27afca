"""End to end, as a streamer uses it: `facecast run` under a real X server (Xvfb), real key presses
(xdotool, through XTEST like a keyboard) seen by the global hotkeys, the state read back through the
control API and `facecast ctl`."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from facecast.control.keys import parse_combo
from tests.conftest import PORTRAIT, count_frames, facecast_env, popen_facecast, run_facecast

pytestmark = pytest.mark.slow

XVFB, XDOTOOL = shutil.which("Xvfb"), shutil.which("xdotool")
needs_x = pytest.mark.skipif(
    not (XVFB and XDOTOOL),
    reason="needs Xvfb and xdotool (Debian: apt-get install xvfb xdotool; `make test` installs them as root)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def display():
    """A private X server on a display number it picks itself (-displayfd): no clash with others."""
    if not (XVFB and XDOTOOL):
        pytest.skip("needs Xvfb and xdotool")
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        [XVFB, "-displayfd", str(write_fd), "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()
        if not number:
            pytest.skip("Xvfb did not start")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def press(display: str, *keys: str) -> None:
    subprocess.run([XDOTOOL, "key", *keys], check=True, env={**os.environ, "DISPLAY": display}, timeout=10)


class Daemon:
    """`facecast run` in a subprocess, reached through its control API."""

    def __init__(self, tmp_path: Path, display: str | None, port: int, token: str | None = None) -> None:
        characters = tmp_path / "characters"
        characters.mkdir()
        for name in ("alice", "bob", "carol"):
            shutil.copy(PORTRAIT, characters / f"{name}.png")
        self.recordings = tmp_path / "recordings"
        cfg = {
            "capture": {"source": "synthetic", "width": 320, "height": 240, "fps": 30},
            "tracking": {"enabled": False},
            "effect": {"active": "passthrough"},
            "characters": {"dir": str(characters)},
            "outputs": {"preview": {"enabled": False}, "record": {"path": f"{self.recordings}/rec-{{time}}.mp4"}},
            "stats": {"interval_s": 0},
            "control": {"port": port, "token": token},
            "hotkeys": {"bindings": {"<f9>": "effect debug", "<ctrl>+<alt>+q": "quit"}},
        }
        self.config = tmp_path / "config.yaml"
        self.config.write_text(json.dumps(cfg))  # JSON is YAML
        env = facecast_env()
        if display:
            env["DISPLAY"] = display
        self.proc = popen_facecast("run", "--config", str(self.config), env=env)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=10, trust_env=False)
        self.url = f"http://127.0.0.1:{port}"
        self.output = ""

    def state(self) -> dict:
        response = self.http.get("/state")
        response.raise_for_status()
        return response.json()

    def wait_ready(self, timeout: float = 90) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"facecast run exited early:\n{self.proc.stdout.read()}")
            try:
                state = self.state()
                if state["live"]["frames"] > 0:
                    return state
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("the daemon's API never answered")

    def wait_for(self, check, what: str, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if check(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} never happened; state: {json.dumps(state)}")
            time.sleep(0.05)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return run_facecast("ctl", "--config", str(self.config), *args, timeout=60)

    def finish(self, timeout: float = 20) -> int:
        self.http.close()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -9
        self.output = self.proc.stdout.read()
        return rc


@pytest.fixture
def daemon_factory(tmp_path):
    started: list[Daemon] = []

    def start(display: str | None, **kw) -> Daemon:
        d = Daemon(tmp_path, display, free_port(), **kw)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.terminate()
            try:
                d.proc.wait(10)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()


@needs_x
def test_hotkeys_change_the_daemon_state(display, daemon_factory) -> None:
    d = daemon_factory(display)
    state = d.wait_ready()
    state = d.wait_for(lambda s: s["hotkeys"]["listening"], "hotkeys listening")
    assert state["hotkeys"]["bindings"]["<ctrl>+<alt>+2"] == "character 2"
    assert state["character"]["name"] == "alice"

    press(display, "ctrl+alt+2")
    d.wait_for(lambda s: s["character"] == {"name": "bob", "index": 2}, "ctrl+alt+2 selects character 2")
    press(display, "ctrl+alt+n")
    d.wait_for(lambda s: s["character"]["name"] == "carol", "ctrl+alt+n selects the next character")
    press(display, "ctrl+alt+p")
    d.wait_for(lambda s: s["character"]["name"] == "bob", "ctrl+alt+p selects the previous character")

    press(display, "ctrl+alt+f")
    d.wait_for(lambda s: s["frozen"], "ctrl+alt+f freezes")
    time.sleep(0.3)  # presses of one binding closer than 0.25 s count as a held key
    press(display, "ctrl+alt+f")
    d.wait_for(lambda s: not s["frozen"], "ctrl+alt+f unfreezes")

    press(display, "ctrl+alt+o")
    d.wait_for(lambda s: s["debug_overlay"], "ctrl+alt+o shows the debug overlay")
    press(display, "F9")  # a binding from the config file, no modifier
    d.wait_for(lambda s: s["effect"] == "debug", "F9 switches to the debug effect")
    press(display, "ctrl+alt+a")
    d.wait_for(lambda s: s["effect"] == "animate", "ctrl+alt+a switches to animate")
    press(display, "ctrl+alt+c")  # animate has a neutral pose: the log says it was asked again
    press(display, "ctrl+alt+0")
    d.wait_for(lambda s: s["effect"] == "passthrough", "ctrl+alt+0 switches to passthrough")

    press(display, "ctrl+alt+r")
    state = d.wait_for(lambda s: s["recording"], "ctrl+alt+r starts recording")
    recording = Path(state["outputs"]["record"]["path"])
    deadline = time.monotonic() + 20
    while d.http.get("/stats").json()["outputs"]["record"]["sent"] < 10 and time.monotonic() < deadline:
        time.sleep(0.1)
    press(display, "ctrl+alt+r")
    d.wait_for(lambda s: not s["recording"], "ctrl+alt+r stops recording")

    press(display, "ctrl+alt+v")  # a display exists: the preview window opens
    d.wait_for(lambda s: s["preview"], "ctrl+alt+v shows the preview")
    time.sleep(0.3)
    press(display, "ctrl+alt+v")
    d.wait_for(lambda s: not s["preview"], "ctrl+alt+v hides the preview")

    before = {k: v for k, v in d.state().items() if k != "live"}
    press(display, "ctrl+alt+z")  # not bound
    press(display, "ctrl+alt+9")  # bound, but there are only 3 characters: refused, logged
    time.sleep(0.5)
    assert {k: v for k, v in d.state().items() if k != "live"} == before

    # `facecast ctl` finds the same daemon through the same config
    result = d.ctl("state")
    assert result.returncode == 0, result.stderr
    assert "character  2/3 bob" in result.stdout and "effect     passthrough" in result.stdout
    assert "hotkeys    listening" in result.stdout
    result = d.ctl("character", "9")
    assert result.returncode == 1 and "no character 9; there are 3" in result.stderr

    press(display, "ctrl+alt+q")  # quit from a hotkey
    assert d.finish() == 0
    log = d.output
    assert "hotkey <ctrl>+<alt>+2: character 2 -> character 2/3: bob" in log
    assert "hotkey <ctrl>+<alt>+c: recalibrate -> animate: new neutral pose" in log
    assert "hotkey <ctrl>+<alt>+9: character 9 refused: no character 9" in log
    assert "hotkey <ctrl>+<alt>+q: quit -> stopped in " in log  # once every output had closed
    assert "Traceback" not in log
    assert count_frames(recording) > 5, log


@needs_x
def test_our_parser_agrees_with_pynputs_on_a_real_display(display) -> None:
    combos = [
        "<ctrl>+<alt>+2",
        "<ctrl>+<bogus>",
        "<ctrl>+",
        "<f20>",
        "<f21>",
        "a+b",
        "<ctrl>+<ctrl>",
        "<alt_gr>+q",
        "<media_next>",
        "ctrl+a",
        "<ctrl>++",
        "<123>",
        "<Ctrl>+A",
        "<ctrl>+a+A",
        "<cmd>+<shift>+<page_down>",
        "<ctrl>+<alt>+<delete>",
        "<shift_l>+<shift_r>",
    ]
    probe = (
        "import json, sys\nfrom pynput.keyboard import HotKey\nout = {}\n"
        "for c in json.loads(sys.argv[1]):\n"
        "    try:\n        HotKey.parse(c); out[c] = True\n"
        "    except ValueError:\n        out[c] = False\n"
        "print(json.dumps(out))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(combos)],
        capture_output=True,
        text=True,
        env={**os.environ, "DISPLAY": display},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for combo, pynput_ok in json.loads(result.stdout).items():
        try:
            parse_combo(combo)
            ours = True
        except ValueError:
            ours = False
        assert ours == pynput_ok, combo


def test_without_a_display_the_daemon_warns_and_the_api_still_works(daemon_factory) -> None:
    token = "0123456789abcdef-token"
    d = daemon_factory(":987", token=token)  # no X server there: pynput cannot load
    state = d.wait_ready()
    # a token in the config: `facecast ctl` sends it, a request without it is refused
    assert httpx.get(f"{d.url}/state", trust_env=False).status_code == 401
    assert state["hotkeys"]["listening"] is False
    assert "pynput cannot reach the keyboard" in state["hotkeys"]["reason"]
    result = d.ctl("freeze", "on")
    assert result.returncode == 0 and result.stdout.strip() == "frame frozen"
    result = d.ctl("state", "--json")
    assert json.loads(result.stdout)["frozen"] is True
    # a character added from the command line, checked like the folder's files, selected at once
    portrait = d.config.parent / "dana.png"
    shutil.copy(PORTRAIT, portrait)
    result = d.ctl("upload", str(portrait), "--select")
    assert result.returncode == 0, result.stderr
    result = d.ctl("characters")
    assert result.stdout.splitlines()[-1].split() == ["*", "4", "dana"]
    result = d.ctl("upload", str(d.config))  # not an image
    assert result.returncode == 1 and "config.yaml" in result.stderr and "not supported" in result.stderr
    result = d.ctl("output", "record", "on")
    assert result.returncode == 0 and result.stdout.startswith("output record on (")
    assert d.ctl("record", "stop").stdout.startswith("recording stopped")
    result = d.ctl("quit")
    assert result.returncode == 0
    assert d.finish() == 0
    assert "hotkeys off: pynput cannot reach the keyboard" in d.output
    assert "Traceback" not in d.output


def test_a_busy_port_is_a_start_up_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = run_facecast(
            "run",
            "--set",
            "capture.source=synthetic",
            "--set",
            f"control.port={port}",
            "--set",
            "effect.active=passthrough",
            "--frames",
            "1",
        )
    assert result.returncode == 3
    assert f"control API cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr


@pytest.mark.parametrize(
    ("binding", "rc", "message"),
    [
        ('{"<ctrl>+<wat>": freeze}', 2, "hotkeys.bindings"),
        ('{"<f9>": "dance"}', 2, "'<f9>': unknown action 'dance'"),
        ('{"<f9>": "effect sepia"}', 3, "hotkeys.bindings '<f9>': unknown effect 'sepia'"),
        ('{"<f9>": "output ndi9"}', 3, "hotkeys.bindings '<f9>': unknown output 'ndi9'"),
    ],
)
def test_a_bad_binding_stops_start_up_naming_it(binding: str, rc: int, message: str) -> None:
    result = run_facecast(
        "run",
        "--set",
        "capture.source=synthetic",
        "--set",
        "effect.active=passthrough",
        "--set",
        f"hotkeys.bindings={binding}",
        "--set",
        f"control.port={free_port()}",
        "--frames",
        "1",
    )
    assert result.returncode == rc, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_ctl_without_a_daemon_says_so() -> None:
    result = run_facecast("ctl", "--set", f"control.port={free_port()}", "state")
    assert result.returncode == 3
    assert "no facecast daemon answers at http://127.0.0.1:" in result.stderr
