"""Model registry and the verified, resumable downloader against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facecast.engines.contracts import CONTRACTS
from facecast.models.download import DownloadError, download, status
from facecast.models.registry import MODEL_SETS, ModelFile, find
from tests.conftest import run_facecast

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Server:
    def __init__(self) -> None:
        self.served = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                else:
                    self.send_response(200)
                body = PAYLOAD[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                outer.served += len(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/model.onnx"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.httpd.shutdown()


def _file(url: str, sha: str | None = None) -> ModelFile:
    return ModelFile("test", "sub/model.onnx", url, sha or hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD))


def test_registry_matches_the_engine_contracts():
    for s in MODEL_SETS.values():
        for f in s.files:
            assert CONTRACTS[f.key].file == f.path
            assert len(f.sha256) == 64 and f.url.startswith("https://huggingface.co/")
    assert MODEL_SETS["inswapper"].non_commercial and not MODEL_SETS["liveportrait"].non_commercial
    assert [f.key for _, f in find("w600k_r50.onnx")] == ["w600k_r50"]
    with pytest.raises(KeyError, match="unknown model"):
        find("gfpgan")


def test_download_verifies_and_places_the_file(server, tmp_path):
    seen = []
    path = download(_file(server.url), tmp_path, lambda done, total: seen.append((done, total)))
    assert path == tmp_path / "sub" / "model.onnx" and path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert not (tmp_path / "sub" / "model.onnx.part").exists()
    assert status(_file(server.url), tmp_path, verify=True) == "verified"


def test_an_interrupted_download_resumes(server, tmp_path):
    part = tmp_path / "sub" / "model.onnx.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD[:300_000])
    download(_file(server.url), tmp_path)
    assert server.served == len(PAYLOAD) - 300_000  # only the rest was fetched
    assert (tmp_path / "sub" / "model.onnx").read_bytes() == PAYLOAD


def test_a_checksum_mismatch_places_nothing(server, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(_file(server.url, sha="0" * 64), tmp_path)
    assert not list((tmp_path / "sub").iterdir())  # no final file, no partial left behind


def test_cli_refuses_the_non_commercial_licence_unless_accepted(tmp_path):
    result = run_facecast("models", "--dir", str(tmp_path), "download", "inswapper")
    assert result.returncode == 1
    assert "NON-COMMERCIAL" in result.stderr and "--accept-licence" in result.stderr
    assert not any(tmp_path.iterdir())


def test_cli_list_and_verify(tmp_path):
    listed = run_facecast("models", "--dir", str(tmp_path), "list")
    assert listed.returncode == 0 and "inswapper_128.onnx" in listed.stdout and "missing" in listed.stdout
    (tmp_path / "w600k_r50.onnx").write_bytes(b"not the model")
    verified = run_facecast("models", "--dir", str(tmp_path), "verify", "w600k_r50")
    assert verified.returncode == 1 and "wrong size" in verified.stdout
