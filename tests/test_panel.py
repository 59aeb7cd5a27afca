"""The control panel: the live settings (`set`), the preview encoder, and the real page driven in a
real browser (Debian's chromium under Playwright) against a real `facecast run`.

The browser tests need chromium (`apt-get install chromium`) and Playwright for Python
(`pip install playwright`; its own browser download is never used); without them they are skipped
and say why. About a minute on two cores: one daemon for the page, one with a token that is
restarted under the page, one browser.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import signal
import subprocess
import threading
import time
import typing
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
import pytest

from facecast.assets import default_portrait
from facecast.control.actions import ActionError, parse_command
from facecast.control.preview_tap import CHECKER_SHADES, FrameTap, PreviewEncoder
from facecast.control.settings import LIVE_KEYS
from facecast.effects.stage import EffectConfig, EffectStage, build_effects
from facecast.types import FramePacket
from tests.conftest import REPO, free_port, popen_facecast, run_facecast

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "panel-test-token-0123456789"
SCREENSHOTS = REPO / "docs" / "images"


# -- the `set` action on a real effect stage -----------------------------------------------------------
def test_every_live_key_is_a_key_of_its_backend_config() -> None:
    for (effect, backend), keys in LIVE_KEYS.items():
        annotation = EffectConfig.model_fields[effect].annotation
        models = typing.get_args(annotation) or (annotation,)  # animate/swap: one model per backend
        model = next(m for m in models if backend is None or m.model_fields["backend"].default == backend)
        for key in keys:
            node = model
            for part in key.split("."):
                assert part in node.model_fields, f"effect.{effect}.{key}: no such key in {node.__name__}"
                node = node.model_fields[part].annotation


def _stage() -> EffectStage:
    return EffectStage(build_effects(EffectConfig()), "passthrough")


def _packet(seq: int = 0) -> FramePacket:
    return FramePacket(seq=seq, image=np.zeros((48, 64, 3), np.uint8), t_capture_ns=time.perf_counter_ns())


def test_set_changes_a_setting_in_the_effect_thread_before_the_next_frame() -> None:
    stage = _stage()
    daemon = SimpleNamespace(effect=stage)  # all the `set` action reaches is the effect stage
    command = parse_command("set effect.animate.mouth 1.4")
    answer: list[str] = []
    caller = threading.Thread(target=lambda: answer.append(command.spec.handler(daemon, command.args)))
    caller.start()
    time.sleep(0.2)
    assert stage.effects["animate"].cfg.mouth == 1.0  # no frame yet: the effect has not seen it
    assert caller.is_alive()  # the action waits for the frame that takes it
    stage.process(_packet())
    caller.join(2)
    assert answer == ["effect.animate.mouth = 1.4"]
    assert stage.effects["animate"].cfg.mouth == 1.4
    # Nested keys, text read like --set, and a neighbouring effect's settings.
    for text, check in [
        ("set effect.animate.pose.yaw 0.5", lambda: stage.effects["animate"].cfg.pose.yaw == 0.5),
        ("set effect.swap.blend seamless", lambda: stage.effects["swap"].cfg.blend == "seamless"),
        ("set effect.swap.keep_eyes off", lambda: stage.effects["swap"].cfg.keep_eyes is False),
        (
            "set effect.animate.background_color [10,20,30]",
            lambda: stage.effects["animate"].cfg.background_color == (10, 20, 30),
        ),
    ]:
        command = parse_command(text)
        done = threading.Thread(target=command.spec.handler, args=(daemon, command.args))
        done.start()
        while done.is_alive():
            stage.process(_packet())
            time.sleep(0.01)
        assert check(), text


@pytest.mark.parametrize(
    "text, status, words",
    [
        (
            "set effect.animate.mouth 9",
            400,
            ["effect.animate.mouth = 9", "less than or equal to 3", "allowed: a number from 0 to 3"],
        ),
        ("set effect.swap.blend soft", 400, ["effect.swap.blend = 'soft'", "allowed: one of hard, feather, seamless"]),
        ("set effect.swap.max_faces 2.5", 400, ["allowed: a whole number from 1 to 8"]),
        ("set effect.animate.eyes lots", 400, ["effect.animate.eyes = 'lots'", "a number from 0 to 2"]),
        ("set effect.animate.width 300", 409, ["read when the effect starts", "config.yaml", "pose.yaw"]),
        ("set effect.animate.wobble 1", 404, ["unknown setting 'effect.animate.wobble'", "mouth"]),
        ("set effect.passthrough.x 1", 404, ["live settings of passthrough: none"]),
        ("set mouth 1", 404, ["write effect.EFFECT.KEY"]),
    ],
)
def test_set_refuses_with_the_key_the_value_and_what_is_allowed(text, status, words) -> None:
    stage = _stage()
    before = stage.effects["animate"].cfg.model_dump(), stage.effects["swap"].cfg.model_dump()
    command = parse_command(text)
    with pytest.raises(ActionError) as info:
        command.spec.handler(SimpleNamespace(effect=stage), command.args)
    assert info.value.status == status
    for word in words:
        assert word in info.value.message, info.value.message
    stage.process(_packet())
    assert (stage.effects["animate"].cfg.model_dump(), stage.effects["swap"].cfg.model_dump()) == before


def test_removing_the_active_character_selects_the_next_and_keeps_its_file(tmp_path) -> None:
    from facecast.characters.library import CharacterLibrary

    for name in ("alice", "bob"):
        shutil.copy(default_portrait(), tmp_path / f"{name}.png")
    library = CharacterLibrary(tmp_path)
    library.load_all()
    assert library.active.name == "alice"
    library.remove("alice")
    assert library.names() == ["bob"] and library.active.name == "bob"
    assert (tmp_path / "removed" / "alice.png").is_file() and not (tmp_path / "alice.png").exists()
    with pytest.raises(KeyError):
        library.remove("alice")
    library.remove(1)
    assert library.names() == [] and library.active is None
    assert sorted(p.name for p in (tmp_path / "removed").iterdir()) == ["alice.png", "bob.png"]


# -- the preview encoder ------------------------------------------------------------------------------
def test_the_preview_is_encoded_only_while_someone_watches() -> None:
    tap = FrameTap()
    encoder = PreviewEncoder(tap, fps=20, width=480)
    image = np.zeros((480, 960, 4), np.uint8)
    image[:, 480:] = (0, 0, 255, 255)  # right half opaque red, left half transparent

    def deliver(seq: int) -> None:
        tap.offer(FramePacket(seq=seq, image=image, t_capture_ns=0), 0)

    for seq in range(5):
        deliver(seq)
        time.sleep(0.02)
    assert encoder.encoded == 0 and not encoder.running  # nobody watches: no thread, no JPEG

    async def watch_two_frames() -> list[bytes]:
        watcher = encoder.watch(asyncio.get_running_loop())
        frames = []
        try:
            for seq in range(5, 8):
                deliver(seq)
                jpeg = await watcher.next(2.0)
                assert jpeg is not None
                frames.append(jpeg)
        finally:
            encoder.unwatch(watcher)
        return frames

    frames = asyncio.run(watch_two_frames())
    decoded = cv2.imdecode(np.frombuffer(frames[-1], np.uint8), cv2.IMREAD_COLOR)  # a real JPEG decoder
    assert decoded.shape == (240, 480, 3)  # scaled to the preview width
    assert np.allclose(decoded[120, 360], (0, 0, 255), atol=12)  # opaque part as it is
    cells = [int(decoded[6, 6].mean()), int(decoded[6, 18].mean())]  # transparent: checkerboard squares
    assert np.allclose(sorted(cells, reverse=True), CHECKER_SHADES, atol=12), cells
    deadline = time.monotonic() + 2
    while encoder.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not encoder.running  # the last watcher left: the thread ended
    made = encoder.encoded
    for seq in range(8, 12):
        deliver(seq)
        time.sleep(0.02)
    assert encoder.encoded == made


# -- the page in a real browser, against a real daemon ----------------------------------------------------
def _browser_or_skip():
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium (Makefile TEST_DEBS)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: pip install playwright (the test dependency group)")
    return sync_playwright


class Daemon:
    """`facecast run` on a free port: synthetic camera, two characters, jobs in temporary folders."""

    def __init__(self, root: Path, *extra: str, port: int | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = extra
        self.token: str | None = None
        for folder in ("characters", "inputs", "results"):
            (root / folder).mkdir(exist_ok=True)
        for name in ("alice", "bob"):
            shutil.copy(default_portrait(), root / "characters" / f"{name}.png")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Daemon:
        return self.launch().wait_ready()

    def launch(self) -> Daemon:
        sets = [
            "capture.source=synthetic",
            "capture.width=320",
            "capture.height=240",
            "capture.fps=15",
            "tracking.enabled=false",
            "effect.active=animate",
            "effect.animate.width=256",
            "effect.animate.height=256",
            f"characters.dir={self.root / 'characters'}",
            "outputs.preview.enabled=false",
            "hotkeys.enabled=false",
            f"control.port={self.port}",
            f"jobs.db={self.root / 'jobs.sqlite'}",
            f"jobs.input_dirs=[{self.root / 'inputs'}, {self.root / 'characters'}]",
            f"jobs.output_dirs=[{self.root / 'results'}]",
            *self.extra,
        ]
        self.proc = popen_facecast("run", *[a for s in sets for a in ("--set", s)], cwd=self.root)
        return self

    def wait_ready(self) -> Daemon:
        assert self.proc is not None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                if self.get("/state").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the daemon's API did not come up")

    def get(self, path: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.get(self.url + path, headers=headers, timeout=5, trust_env=False)

    def state(self) -> dict:
        return self.get("/state").json()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def until(predicate, timeout: float = 15, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_skip()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def daemons(tmp_path_factory, browser):
    """The panel's daemon, and one with a token (light: 5 fps passthrough), started side by side."""
    main = Daemon(tmp_path_factory.mktemp("panel")).launch()
    locked = Daemon(
        tmp_path_factory.mktemp("locked"), f"control.token={TOKEN}", "capture.fps=5", "effect.active=passthrough"
    )
    locked.token = TOKEN
    locked.launch()
    try:
        yield main.wait_ready(), locked
    finally:
        main.stop()
        locked.stop()


@pytest.fixture(scope="module")
def daemon(daemons):
    return daemons[0]


class Page:
    """A browser tab on the panel that records every request it makes (and any script error)."""

    def __init__(self, browser, url: str, width: int = 1280, height: int = 1000, context=None) -> None:
        self.context = context or browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("websocket", lambda ws: self.requests.append(ws.url))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url)

    def live(self) -> None:
        self.page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=15000)

    def close(self) -> None:
        self.context.close()
        assert not self.errors, self.errors


@pytest.fixture
def panel(browser, daemon):
    page = Page(browser, daemon.url + "/")
    page.live()
    yield page
    page.close()


def test_the_panel_loads_with_no_request_leaving_this_computer(browser, daemon) -> None:
    for path in ("/", "/dock", "/docs"):
        page = Page(browser, daemon.url + path)
        if path == "/docs":  # Swagger UI from the package: the operations are there, offline
            page.page.wait_for_selector("#swagger-ui .opblock", timeout=20000)
            assert page.page.locator("#swagger-ui .opblock").count() > 20
            assert page.page.get_by_text("/actions/set").count() >= 1
        else:
            page.live()
            page.page.wait_for_function("Number(document.getElementById('preview').dataset.frames) >= 2")
            page.page.wait_for_function(  # both thumbnails drawn
                "[...document.querySelectorAll('#characters img')].filter(i => i.naturalWidth > 0).length === 2"
            )
        hosts = {urlsplit(url).hostname for url in page.requests if not url.startswith(("data:", "blob:"))}
        assert hosts == {"127.0.0.1"}, page.requests
        page.close()


def test_clicking_the_second_character_makes_ctl_state_report_it(panel, daemon) -> None:
    assert daemon.state()["character"]["name"] == "alice"
    bob = panel.page.locator("#characters li[data-name='bob'] .pick")
    bob.click()
    until(lambda: bob.get_attribute("aria-pressed") == "true", what="bob shown as active")
    result = run_facecast("ctl", "--url", daemon.url, "state", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["character"] == {"name": "bob", "index": 2}
    panel.page.locator("#characters li[data-name='alice'] .pick").click()
    until(lambda: daemon.state()["character"]["name"] == "alice", what="alice again")


def test_a_slider_changes_the_effect_setting_and_follows_ctl_set(panel, daemon) -> None:
    assert daemon.state()["settings"]["effect.animate.mouth"] == 1.0
    slider = panel.page.locator("#set-effect-animate-mouth")
    slider.focus()  # the keyboard is enough: arrows move a range input by its step (0.05)
    for _ in range(4):
        slider.press("ArrowRight")
    until(lambda: daemon.state()["settings"]["effect.animate.mouth"] == pytest.approx(1.2), what="mouth 1.2")
    # The other way: a change from `facecast ctl` shows on the page.
    result = run_facecast("ctl", "--url", daemon.url, "set", "effect.animate.pose.yaw", "2.5")
    assert result.returncode == 0 and "effect.animate.pose.yaw = 2.5" in result.stdout, result.stderr
    yaw = panel.page.locator("#set-effect-animate-pose-yaw")
    until(lambda: yaw.input_value() == "2.5", what="the yaw slider at 2.5")
    refused = httpx.post(daemon.url + "/actions/set", json={"key": "effect.animate.pose.yaw", "value": 7}, timeout=5)
    assert refused.status_code == 400 and "allowed: a number from 0 to 3" in refused.json()["error"]
    assert daemon.state()["settings"]["effect.animate.pose.yaw"] == 2.5
    for key in ("effect.animate.pose.yaw", "effect.animate.mouth"):  # as they were, for the next tests
        assert httpx.post(daemon.url + "/actions/set", json={"key": key, "value": 1.0}, timeout=5).status_code == 200


def _drop(page, name: str, data: bytes, mime: str) -> None:
    """Drop a file onto the panel like a file dragged from the desktop."""
    transfer = page.evaluate_handle(
        """([name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const dt = new DataTransfer();
            dt.items.add(new File([bytes], name, {type: mime}));
            return dt;
        }""",
        [name, base64.b64encode(data).decode(), mime],
    )
    page.dispatch_event("main", "dragenter", {"dataTransfer": transfer})
    assert page.locator("#drop-overlay").is_visible()
    page.dispatch_event("main", "drop", {"dataTransfer": transfer})


def test_dropping_a_corrupt_image_shows_the_reason_and_the_stream_goes_on(panel, daemon) -> None:
    frames = daemon.state()["live"]["frames"]
    _drop(panel.page, "broken.png", b"\x89PNG\r\n\x1a\n this is not an image", "image/png")
    note = panel.page.locator("#uploads li.error", has_text="broken.png")
    note.wait_for(timeout=15000)
    assert "not a readable image" in note.inner_text()
    assert daemon.state()["characters"] == ["alice", "bob"]
    until(lambda: daemon.state()["live"]["frames"] > frames + 10, what="frames still coming")
    # A good portrait is added, then removed with two clicks (its file is kept in removed/).
    _drop(panel.page, "carol.png", default_portrait().read_bytes(), "image/png")
    until(lambda: "carol" in daemon.state()["characters"], timeout=30, what="carol added")
    remove = panel.page.locator("#characters li[data-name='carol'] .remove")
    remove.wait_for()
    remove.click()
    assert "carol" in daemon.state()["characters"]  # one click only arms it
    remove.click()
    until(lambda: "carol" not in daemon.state()["characters"], what="carol removed")
    assert (daemon.root / "characters" / "removed" / "carol.png").is_file()


def test_the_panel_routes_refuse_with_the_reason(daemon) -> None:
    def refused(response: httpx.Response, status: int, words: str) -> None:
        assert response.status_code == status, response.text
        assert words in response.json()["error"], response.json()

    get = daemon.get
    refused(get("/characters/nobody/thumbnail.png"), 404, "no character 'nobody'; known: alice, bob")
    refused(get("/static/panel/secret.py"), 404, "no such file")
    refused(get("/jobs/nojob/result"), 404, "no job nojob")
    upload = httpx.post(daemon.url + "/job-inputs", files={"file": ("clip.mp4", b"not a video at all")}, timeout=10)
    refused(upload, 422, "clip.mp4 is not a video facecast can read")
    assert not list((daemon.root / "inputs" / "facecast-uploads").glob("clip*"))  # nothing is left behind
    refused(
        httpx.post(daemon.url + "/job-inputs", files={"file": ("notes.txt", b"hi")}, timeout=10),
        400,
        "not a video file name",
    )
    assert get("/characters/bob/thumbnail.png").headers["content-type"] == "image/png"
    info = get("/characters/bob").json()
    assert info["file"] == str(daemon.root / "characters" / "bob.png") and info["index"] == 2


def test_a_submitted_job_reaches_100_percent_and_its_result_opens(panel, daemon, synthetic_video) -> None:
    page = panel.page
    video = synthetic_video(16, 320, 240)
    page.locator("#job-kind").select_option("swap")
    page.locator("#job-character").select_option("alice")
    page.locator("#job-video-file").set_input_files(str(video))  # uploaded into the allowed folder
    until(lambda: page.locator("#job-video").input_value().endswith(".mp4"), what="the uploaded video's path")
    assert Path(page.locator("#job-video").input_value()).parent == daemon.root / "inputs" / "facecast-uploads"
    page.locator("#job-output").fill("panel-job.mp4")
    page.get_by_role("button", name="Submit job").click()
    job = page.locator("#jobs li", has_text="panel-job.mp4")
    job.wait_for(timeout=10000)
    until(
        lambda: job.locator(".pct").inner_text() == "100%" and "done" in job.get_attribute("class"),
        timeout=120,
        what="the job's bar at 100%",
    )
    assert job.locator("progress").evaluate("p => p.value") == 1
    assert (daemon.root / "results" / "panel-job.mp4").is_file()
    job.get_by_role("button", name="open").click()
    player = page.locator("#player-video")
    until(lambda: player.evaluate("v => v.readyState >= 1 && v.videoWidth"), what="the result playing")
    assert player.evaluate("v => [v.videoWidth, v.videoHeight]") == [320, 240]  # decoded by the browser
    page.locator("#player-close").click()


def test_the_preview_shows_frames_that_change_and_stops_when_nobody_watches(browser, daemon) -> None:
    page = Page(browser, daemon.url + "/")
    page.live()
    page.page.locator("#effects button", has_text="passthrough").click()  # the moving synthetic face
    until(lambda: daemon.state()["effect"] == "passthrough", what="passthrough")
    preview = page.page.locator("#preview")
    page.page.wait_for_function("Number(document.getElementById('preview').dataset.frames) >= 3")
    # The frames counted may be animate's (512x512) from before the switch: compare passthrough's only.
    page.page.wait_for_function("document.getElementById('preview').naturalWidth === 320")
    shots = []
    for _ in range(3):
        shots.append(cv2.imdecode(np.frombuffer(preview.screenshot(), np.uint8), cv2.IMREAD_COLOR))
        time.sleep(0.6)
    assert any(np.abs(a.astype(int) - b.astype(int)).mean() > 1.0 for a, b in itertools.pairwise(shots))
    assert preview.evaluate("i => i.naturalWidth") == 320  # the source size: never scaled up
    stats = daemon.get("/stats").json()["panel_preview"]
    assert stats["running"] and stats["watchers"] >= 1
    page.close()
    until(lambda: not daemon.get("/stats").json()["panel_preview"]["running"], what="the encoder to stop")
    made = daemon.get("/stats").json()["panel_preview"]["encoded"]
    time.sleep(0.5)
    assert daemon.get("/stats").json()["panel_preview"]["encoded"] == made
    assert httpx.post(daemon.url + "/actions/effect", json={"name": "animate"}, timeout=5).status_code == 200


def test_behind_a_token_it_asks_once_and_reconnects_by_itself(browser, daemons) -> None:
    d = daemons[1].wait_ready()
    page = Page(browser, d.url + "/")
    form = page.page.locator("#token-form")
    form.wait_for(state="visible", timeout=10000)
    page.page.locator("#token-input").fill("wrong-token-but-long-enough")
    page.page.keyboard.press("Enter")
    until(lambda: "wrong token" in page.page.locator("#token-error").inner_text(), what="wrong token said")
    page.page.locator("#token-input").fill(TOKEN)
    page.page.keyboard.press("Enter")
    page.live()
    page.page.wait_for_function("Number(document.getElementById('preview').dataset.frames) >= 2")
    page.page.reload()  # same browser session: not asked again
    page.live()
    assert not form.is_visible()
    # The daemon dies under the page and comes back: the page reconnects by itself, same token.
    d.kill()
    page.page.wait_for_function("document.getElementById('conn').textContent.startsWith('offline')", timeout=10000)
    d.start()
    page.page.wait_for_function("document.getElementById('conn').textContent === 'live'", timeout=30000)
    page.page.locator("#characters li[data-name='bob'] .pick").click()
    until(lambda: d.state()["character"]["name"] == "bob", what="bob via the token")
    page.close()
    fresh = Page(browser, d.url + "/")  # a new browser session: asked again
    fresh.page.locator("#token-form").wait_for(state="visible", timeout=10000)
    fresh.close()


def test_screenshots_of_the_panel_and_the_dock(browser, daemon) -> None:
    """docs/images/panel.png and dock.png (docs/OBS.md shows them)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = {
        "panel.png": Page(browser, daemon.url + "/", width=1280, height=900),
        "dock.png": Page(browser, daemon.url + "/dock", width=400, height=900),
    }
    for page in pages.values():
        page.live()
        page.page.wait_for_function("Number(document.getElementById('preview').dataset.frames) >= 2")
        page.page.wait_for_function(
            "[...document.querySelectorAll('#characters img')].filter(i => i.naturalWidth > 0).length === 2"
        )
    time.sleep(6)  # a few seconds of the chart
    for name, page in pages.items():
        page.page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
        page.close()
        assert cv2.imread(str(SCREENSHOTS / name)).shape[1] == (1280 if name == "panel.png" else 400)
