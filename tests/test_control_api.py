"""The control API on a real running daemon (synthetic camera, real stages, real character library):
every action, the state it changes, bad requests and bad uploads, the WebSocket, the guards."""

from __future__ import annotations

import io
import shutil
import time

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from facecast.config import load_config
from facecast.control.api import create_app
from facecast.control.config import ControlConfig
from facecast.daemon import Daemon
from tests.conftest import PORTRAIT, count_frames

TOKEN = "s3cret-token-0123456789"
LOCAL = {"host": "127.0.0.1:8765"}  # TestClient's WebSocket sends Host: testserver otherwise


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    folder = tmp_path_factory.mktemp("characters")
    for name in ("alice", "bob", "carol"):
        shutil.copy(PORTRAIT, folder / f"{name}.png")
    recordings = tmp_path_factory.mktemp("recordings")
    cfg = load_config(
        None,
        [
            "capture.source=synthetic",
            "capture.width=160",
            "capture.height=120",
            "capture.fps=30",
            "tracking.enabled=false",
            "stats.interval_s=0",
            "effect.active=passthrough",
            f"characters.dir={folder}",
            "outputs.preview.enabled=false",
            f"outputs.record.path={recordings}/rec-{{time}}.mp4",
            'outputs.sink={type: "null", enabled: true}',
            "control.upload_max_mb=1",
        ],
    )
    d = Daemon(cfg)
    assert d.characters.names() == ["alice", "bob", "carol"]
    d.start()
    d.recordings = recordings
    yield d
    d.stop()


@pytest.fixture(scope="module")
def api(daemon):
    with TestClient(create_app(daemon.controls, daemon.cfg.control), base_url="http://127.0.0.1") as client:
        yield client


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def refused(response, status: int, reason: str) -> str:
    """A 4xx with a JSON reason that says `reason`, never a traceback."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert reason in body["error"], body["error"]
    assert "Traceback" not in response.text
    return body["error"]


def png(image: np.ndarray) -> bytes:
    ok_, data = cv2.imencode(".png", image)
    assert ok_
    return data.tobytes()


# -- reading --------------------------------------------------------------------------------------


def test_state_shows_character_effect_outputs_and_fps(api) -> None:
    deadline = time.monotonic() + 10
    while (state := ok(api.get("/state")))["live"]["frames"] < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert state["effect"] == "passthrough"
    assert {"passthrough", "debug"} <= set(state["effects"])
    assert state["character"] == {"name": "alice", "index": 1}
    assert state["characters"] == ["alice", "bob", "carol"]
    assert state["outputs"]["sink"]["enabled"] is True
    assert state["outputs"]["record"] == {"type": "record", "enabled": False}
    assert state["frozen"] is False and state["debug_overlay"] is False and state["recording"] is False
    assert state["live"]["fps"] > 0 and state["live"]["frames"] >= 5


def test_stats_and_actions_listing(api) -> None:
    stats = ok(api.get("/stats"))
    assert {"fps", "latency_ms", "stages", "dropped", "errors"} <= set(stats)
    actions = {a["name"]: a for a in ok(api.get("/actions"))}
    assert actions["output"]["usage"] == "output NAME [on|off]"
    assert "properties" in actions["character"]["args"]


def test_openapi_docs_list_every_action(api, daemon) -> None:
    schema = ok(api.get("/openapi.json"))
    for name in daemon.controls.daemon.effect.effects and ("character", "freeze", "output", "quit", "record"):
        assert f"/actions/{name}" in schema["paths"]
    assert "/characters" in schema["paths"] and "/state" in schema["paths"]
    docs = api.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


# -- every action ---------------------------------------------------------------------------------


def test_character_by_position_and_by_name(api, daemon) -> None:
    body = ok(api.post("/actions/character", json={"key": 2}))
    assert body["state"]["character"] == {"name": "bob", "index": 2}
    assert daemon.characters.active.name == "bob"
    assert "bob" in body["message"]
    assert ok(api.post("/actions/character", json={"key": "carol"}))["state"]["character"]["index"] == 3
    refused(api.post("/actions/character", json={"key": 9}), 404, "no character 9; there are 3")
    refused(api.post("/actions/character", json={"key": "nobody"}), 404, "no character 'nobody'")
    assert daemon.characters.active.name == "carol"  # a refused selection changes nothing


def test_next_and_previous_character_wrap_around(api, daemon) -> None:
    ok(api.post("/actions/character", json={"key": 3}))
    assert ok(api.post("/actions/next_character"))["state"]["character"]["name"] == "alice"
    assert ok(api.post("/actions/previous_character"))["state"]["character"]["name"] == "carol"


def test_effect_switch_reaches_the_effect_thread(api, daemon) -> None:
    assert ok(api.post("/actions/effect", json={"name": "debug"}))["state"]["effect"] == "debug"
    deadline = time.monotonic() + 5
    while daemon.effect.active != "debug" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert daemon.effect.active == "debug"
    refused(api.post("/actions/effect", json={"name": "sepia"}), 404, "unknown effect 'sepia'; known: passthrough")
    ok(api.post("/actions/effect", json={"name": "passthrough"}))


def test_freeze_toggles_and_sets(api, daemon) -> None:
    assert ok(api.post("/actions/freeze"))["state"]["frozen"] is True
    assert ok(api.post("/actions/freeze"))["state"]["frozen"] is False
    assert ok(api.post("/actions/freeze", json={"on": True}))["state"]["frozen"] is True
    assert ok(api.post("/actions/freeze", json={"on": True}))["state"]["frozen"] is True
    assert daemon.effect.frozen is True
    assert ok(api.post("/actions/freeze", json={"on": False}))["message"] == "frame live"


def test_debug_overlay_toggles(api, daemon) -> None:
    assert ok(api.post("/actions/debug_overlay", json={"on": True}))["state"]["debug_overlay"] is True
    assert daemon.effect.overlay is True
    assert ok(api.post("/actions/debug_overlay"))["state"]["debug_overlay"] is False


def test_recalibrate_needs_an_effect_with_a_neutral_pose(api, daemon) -> None:
    able = [n for n, e in daemon.effect.effects.items() if callable(getattr(e, "recalibrate", None))]
    refused(api.post("/actions/recalibrate"), 409, "effect passthrough has no neutral pose")
    if able:
        ok(api.post("/actions/effect", json={"name": able[0]}))
        assert "neutral pose" in ok(api.post("/actions/recalibrate"))["message"]
        ok(api.post("/actions/effect", json={"name": "passthrough"}))


def test_record_starts_a_new_file_each_time_and_finalises_it(api, daemon) -> None:
    body = ok(api.post("/actions/record"))
    assert body["state"]["recording"] is True
    path = body["state"]["outputs"]["record"]["path"]
    assert path.startswith(str(daemon.recordings))
    deadline = time.monotonic() + 15
    while daemon.output.workers["record"].sent < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    body = ok(api.post("/actions/record", json={"on": False}))
    assert body["state"]["recording"] is False and path in body["message"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if count_frames(path) > 0:
                break
        except Exception:
            pass
        time.sleep(0.1)
    assert count_frames(path) > 5  # a complete, playable mp4


def test_output_by_name_and_text_form(api, daemon) -> None:
    body = ok(api.post("/actions/output", json={"name": "sink", "on": False}))
    assert body["state"]["outputs"]["sink"]["enabled"] is False
    body = ok(api.post("/actions", json={"action": "output", "args": ["sink", "on"]}))
    assert body["state"]["outputs"]["sink"]["enabled"] is True and body["action"] == "output"
    refused(api.post("/actions/output", json={"name": "ndi9"}), 404, "unknown output 'ndi9'; configured: preview")


def test_preview_without_a_display_is_refused_with_the_reason(api, monkeypatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    refused(api.post("/actions/preview", json={"on": True}), 409, "output preview cannot start: no X11 display")
    assert ok(api.get("/state"))["preview"] is False


# -- bad requests -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "reason"),
    [
        (
            "/actions/character",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "not valid JSON",
        ),
        ("/actions/character", {"json": {}}, 422, "key: Field required"),
        ("/actions/character", {"json": {"key": 0}}, 422, "positions start at 1"),
        ("/actions/character", {"json": {"key": [1]}}, 422, "key"),
        ("/actions/freeze", {"json": {"on": "maybe"}}, 422, "on: Input should be a valid boolean"),
        ("/actions/freeze", {"json": {"colour": "red"}}, 422, "colour: unknown field"),
        ("/actions/dance", {}, 404, "Not Found"),
        ("/actions", {"json": {"action": "dance"}}, 404, "unknown action 'dance'"),
        ("/actions", {"json": {"action": "character", "args": ["1", "2"]}}, 400, "too many arguments"),
        ("/actions", {"json": {"args": []}}, 422, "action: Field required"),
    ],
)
def test_bad_requests_get_a_4xx_with_the_reason(api, daemon, path, kwargs, status, reason) -> None:
    before = daemon.controls.state()
    refused(api.post(path, **kwargs), status, reason)
    after = daemon.controls.state()
    assert {k: v for k, v in before.items() if k != "live"} == {k: v for k, v in after.items() if k != "live"}


def test_wrong_method_is_a_json_405(api) -> None:
    refused(api.get("/actions/freeze"), 405, "Method Not Allowed")


# -- characters -------------------------------------------------------------------------------------


def test_characters_listing(api) -> None:
    body = ok(api.get("/characters"))
    names = [c["name"] for c in body["characters"]]
    assert names[:3] == ["alice", "bob", "carol"]
    assert [c["index"] for c in body["characters"]] == list(range(1, len(names) + 1))
    assert sum(c["active"] for c in body["characters"]) == 1


def test_upload_a_character_and_select_it(api, daemon) -> None:
    data = PORTRAIT.read_bytes()
    body = ok(api.post("/characters", files={"file": ("dave.png", data, "image/png")}), 201)
    assert body["character"] == "dave"
    assert (daemon.characters.folder / "dave.png").read_bytes() == data
    assert "dave" in body["state"]["characters"]
    body = ok(api.post("/characters", params={"select": "true"}, files={"file": ("erin.png", data)}), 201)
    assert body["state"]["character"]["name"] == "erin"
    assert daemon.characters.active.name == "erin"


def _noise(size: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("filename", "data", "status", "reason"),
    [
        ("notes.png", b"hello, not an image", 422, "not a readable image"),
        ("noise.png", png(_noise(300)), 422, "no face found"),
        ("tiny.png", png(cv2.resize(cv2.imread(str(PORTRAIT)), (48, 48))), 422, "at least 128 px"),
        ("face.gif", PORTRAIT.read_bytes(), 422, "'.gif' files are not supported"),
        ("alice.png", PORTRAIT.read_bytes(), 422, "already exists"),
        ("empty.png", b"", 400, "empty"),
        ("huge.png", b"\x89PNG" + bytes(1_200_000), 413, "larger than control.upload_max_mb (1 MB)"),
    ],
)
def test_bad_uploads_are_refused_with_the_reason_and_change_nothing(
    api, daemon, filename, data, status, reason
) -> None:
    folder = daemon.characters.folder
    files_before = sorted(p.name for p in folder.iterdir())
    names_before = daemon.characters.names()
    active_before = daemon.characters.active.name
    upload = api.post("/characters", params={"select": "true"}, files={"file": (filename, io.BytesIO(data))})
    refused(upload, status, reason)
    assert sorted(p.name for p in folder.iterdir()) == files_before
    assert daemon.characters.names() == names_before
    assert daemon.characters.active.name == active_before


def test_an_upload_cannot_write_outside_the_character_folder(api, daemon) -> None:
    folder = daemon.characters.folder
    response = api.post("/characters", files={"file": ("../../escape.png", PORTRAIT.read_bytes())})
    # The multipart parser keeps only the base name; were it to pass the path on, the library refuses it.
    assert response.status_code in (201, 422), response.text
    assert not (folder.parent / "escape.png").exists() and not (folder.parent.parent / "escape.png").exists()
    if response.status_code == 201:
        assert (folder / "escape.png").is_file()


def test_upload_without_a_file_field(api) -> None:
    refused(api.post("/characters", data={"other": "x"}), 422, "file: Field required")


# -- WebSocket --------------------------------------------------------------------------------------


def _until(ws, predicate, limit: int = 50) -> dict:
    for _ in range(limit):
        message = ws.receive_json()
        if predicate(message):
            return message
    raise AssertionError("expected message never came")


def test_websocket_streams_state_actions_and_stats(api, daemon) -> None:
    ok(api.post("/actions/freeze", json={"on": False}))
    with api.websocket_connect("/ws?interval=0.2", headers=LOCAL) as ws:
        first = ws.receive_json()
        assert first["type"] == "state" and first["state"]["frozen"] is False
        ok(api.post("/actions/freeze", json={"on": True}))
        action = _until(ws, lambda m: m["type"] == "action")
        assert action["action"] == "freeze" and action["source"] == "api" and action["args"] == {"on": True}
        state = _until(ws, lambda m: m["type"] == "state")
        assert state["state"]["frozen"] is True
        stats = _until(ws, lambda m: m["type"] == "stats")
        assert "fps" in stats["stats"]
        # acting through the socket itself
        ws.send_json({"action": "freeze", "args": ["off"], "id": 7})
        result = _until(ws, lambda m: m["type"] == "result")
        assert result == {"type": "result", "ok": True, "action": "freeze", "message": "frame live", "id": 7}
        ws.send_json({"action": "effect", "with": {"name": "debug"}})
        assert _until(ws, lambda m: m["type"] == "result")["ok"] is True
        ws.send_json({"action": "dance"})
        result = _until(ws, lambda m: m["type"] == "result")
        assert result["ok"] is False and result["status"] == 404 and "unknown action" in result["error"]
        ws.send_text("{nope")
        result = _until(ws, lambda m: m["type"] == "result")
        assert result["ok"] is False and "not valid JSON" in result["error"]
    assert daemon.effect.frozen is False
    ok(api.post("/actions/effect", json={"name": "passthrough"}))


def test_websocket_rejects_a_bad_interval(api) -> None:
    with api.websocket_connect("/ws?interval=0", headers=LOCAL) as ws:
        assert "interval" in ws.receive_json()["error"]
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


# -- guards -----------------------------------------------------------------------------------------


def test_foreign_host_and_origin_are_refused_on_loopback(api, daemon) -> None:
    refused(api.get("/state", headers={"host": "evil.example:8765"}), 403, "Host 'evil.example:8765' refused")
    refused(
        api.post("/actions/quit", headers={"origin": "https://evil.example"}),
        403,
        "requests from web page https://evil.example are refused",
    )
    # Exact origins only: a page on another localhost port is another web site.
    refused(api.get("/state", headers={"origin": "http://localhost:3000"}), 403, "add it to control.allowed_origins")
    refused(api.get("/state", headers={"origin": "http://127.0.0.1:3000"}), 403, "add it to control.allowed_origins")
    assert not daemon.stopping


def test_a_page_the_api_serves_itself_is_its_own_origin_and_changes_state_with_the_session_secret(api, daemon) -> None:
    own = {"origin": "http://127.0.0.1"}  # the TestClient's Host: 127.0.0.1
    ok(api.get("/state", headers=own))
    frozen = daemon.effect.frozen
    refused(api.post("/actions/freeze", headers=own), 403, "session secret")
    assert daemon.effect.frozen == frozen
    secret = ok(api.get("/session"))["session"]  # a same-origin GET carries no Origin
    body = ok(api.post("/actions/freeze", headers={**own, "x-facecast-session": secret}))
    assert body["state"]["frozen"] is not frozen
    ok(api.post("/actions/freeze", json={"on": frozen}))


def test_allowed_origins_are_exact_and_need_the_session_secret_to_change_state(daemon) -> None:
    cfg = ControlConfig(allowed_origins=["https://deck.example", "null"])
    page = {"origin": "https://deck.example"}
    with TestClient(create_app(daemon.controls, cfg), base_url="http://127.0.0.1") as client:
        state = client.get("/state", headers=page)
        ok(state)
        assert state.headers["access-control-allow-origin"] == "https://deck.example"  # the page may read it
        refused(client.get("/state", headers={"origin": "https://other.example"}), 403, "refused")
        refused(client.get("/state", headers={"origin": "https://deck.example:8443"}), 403, "refused")
        # A page can send a POST without reading anything first: without the secret it changes nothing.
        frozen = daemon.effect.frozen
        refused(client.post("/actions/freeze", headers=page), 403, "session secret")
        refused(client.post("/actions/freeze", headers={**page, "x-facecast-session": "guess"}), 403, "session secret")
        assert daemon.effect.frozen == frozen
        secret = ok(client.get("/session", headers=page))["session"]
        body = ok(client.post("/actions/freeze", headers={**page, "x-facecast-session": secret}))
        assert body["state"]["frozen"] is not frozen
        ok(client.post("/actions/freeze", headers={**page, "x-facecast-session": secret}))
        # A preflight from the allowed page is answered with what it may send.
        preflight = client.options(
            "/actions/freeze",
            headers={
                **page,
                "access-control-request-method": "POST",
                "access-control-request-headers": "x-facecast-session",
            },
        )
        assert preflight.status_code == 200
        assert "x-facecast-session" in preflight.headers["access-control-allow-headers"]
        # Any sandboxed page has the origin "null": it never gets the secret.
        refused(client.get("/session", headers={"origin": "null"}), 403, "origin null")
        # Local programs (no Origin) act without a secret, as before.
        ok(client.post("/actions/freeze", json={"on": frozen}))
        with pytest.raises(WebSocketDisconnect) as info:  # a page's WebSocket can act: it needs the secret too
            with client.websocket_connect("/ws", headers={**LOCAL, **page}) as ws:
                ws.receive_json()
        assert info.value.code == 1008
        with client.websocket_connect(f"/ws?session={secret}", headers={**LOCAL, **page}) as ws:
            assert ws.receive_json()["type"] == "state"


@pytest.mark.parametrize("origin", ["*", "http://localhost:3000/app", "localhost:3000", "http://*.example.com"])
def test_allowed_origins_must_be_exact_origins(origin) -> None:
    with pytest.raises(ValueError, match="not an origin"):
        ControlConfig(allowed_origins=[origin])
    assert ControlConfig(allowed_origins=["HTTP://LocalHost:80/"]).allowed_origins == ["http://localhost"]


def test_token_is_required_when_set(daemon) -> None:
    cfg = ControlConfig(host="0.0.0.0", token=TOKEN)
    with TestClient(create_app(daemon.controls, cfg), base_url="http://192.168.1.20") as client:
        refused(client.get("/state"), 401, "needs a token")
        refused(client.get("/state", headers={"authorization": "Bearer wrong-token-000000000"}), 401, "wrong token")
        refused(client.post("/actions/quit"), 401, "needs a token")
        assert not daemon.stopping
        ok(client.get("/state", headers={"authorization": f"Bearer {TOKEN}"}))
        ok(client.get("/state", headers={"x-facecast-token": TOKEN}))
        assert client.get("/docs").status_code == 200  # the docs page itself is public...
        schema = ok(client.get("/openapi.json"))
        assert schema["security"] == [{"token": []}]  # ...and offers the token to "Try it out"
        with pytest.raises(WebSocketDisconnect) as info:
            with client.websocket_connect("/ws") as ws:
                ws.receive_json()
        assert info.value.code == 1008
        with client.websocket_connect(f"/ws?token={TOKEN}") as ws:
            assert ws.receive_json()["type"] == "state"


# -- last: quit ---------------------------------------------------------------------------------------


def test_quit_asks_the_daemon_to_stop(api, daemon) -> None:
    body = ok(api.post("/actions/quit"))
    # quit answers once every output has closed, saying what it finalised (here: the null sink only)
    assert body["message"].startswith("stopped in ") and body["message"].endswith(": closed sink"), body
    assert body["state"]["stopping"] is True
    assert daemon.pipeline.finished.is_set()
