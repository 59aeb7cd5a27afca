"""The character library on real images: validation reasons, switching, uploads, the CLI check."""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecast.characters import CharacterError, CharacterLibrary
from tests.conftest import PORTRAIT, run_facecast

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _bad_files(folder: Path) -> None:
    (folder / "corrupt.png").write_bytes(PORTRAIT.read_bytes()[:3000])  # truncated PNG
    cv2.imwrite(str(folder / "noface.jpg"), np.full((400, 400, 3), 128, np.uint8))
    cv2.imwrite(str(folder / "huge.png"), np.zeros((12000, 12000), np.uint8))  # 144 megapixels
    cv2.imwrite(str(folder / "tiny.png"), np.zeros((40, 40, 3), np.uint8))
    (folder / "notes.txt").write_text("not an image, not a character file: ignored")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("characters")
    shutil.copy(PORTRAIT, folder / "astronaut.png")
    cv2.imwrite(str(folder / "mirror.jpg"), cv2.flip(cv2.imread(str(PORTRAIT)), 1))
    _bad_files(folder)
    return folder


@pytest.fixture(scope="module")
def library(folder) -> CharacterLibrary:
    lib = CharacterLibrary(folder)
    lib.refused = lib.load_all()
    return lib


def test_bad_files_are_refused_with_their_reason_and_the_rest_load(library):
    reasons = {path.name: reason for path, reason in library.refused}
    assert set(reasons) == {"corrupt.png", "noface.jpg", "huge.png", "tiny.png"}
    assert "corrupt" in reasons["corrupt.png"] or "readable" in reasons["corrupt.png"]
    assert "no face" in reasons["noface.jpg"]
    assert "12000x12000" in reasons["huge.png"] and "megapixels" in reasons["huge.png"]
    assert "40x40" in reasons["tiny.png"]
    assert library.names() == ["astronaut", "mirror"]  # sorted by file name


def test_a_loaded_character_has_landmarks_and_a_matte_that_cuts_out_the_background(library):
    c = library.get("astronaut")
    assert c.landmarks.shape == (478, 3)
    assert c.matte_source == "segmentation"
    nose = c.landmarks[1, :2].astype(int)
    assert c.matte[nose[1], nose[0]] == 255
    assert c.matte[5, 500] < 30  # the studio backdrop in the top right corner


def test_png_alpha_is_used_as_the_matte(tmp_path):
    image = cv2.imread(str(PORTRAIT))
    alpha = np.zeros(image.shape[:2], np.uint8)
    cv2.ellipse(alpha, (225, 150), (120, 150), 0, 0, 360, 255, -1)
    cv2.imwrite(str(tmp_path / "cutout.png"), np.dstack([image, alpha]))
    lib = CharacterLibrary(tmp_path)
    assert lib.load_all() == []
    assert lib.active.matte_source == "alpha channel"
    assert np.array_equal(lib.active.matte, alpha)


def test_large_images_are_downscaled_not_refused(tmp_path):
    big = cv2.resize(cv2.imread(str(PORTRAIT)), (3000, 3000), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    lib = CharacterLibrary(tmp_path)
    assert lib.load_all() == []
    assert lib.active.size == (2048, 2048)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width`x`height` in its header, with a few bytes of pixel data: a decompression
    bomb's shape, small to send and enormous to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


PILLOW_DEFAULT_LIMIT = 1024 * 1024 * 1024 // 4 // 3  # Image.MAX_IMAGE_PIXELS as Pillow ships it


def test_oversized_headers_are_refused_before_decoding_and_pillows_guard_stays_on():
    from PIL import Image

    from facecast.characters.library import CharactersConfig, decode_image

    cfg = CharactersConfig()
    ordinary = cv2.imencode(".png", np.full((300, 200, 3), 90, np.uint8))[1].tobytes()
    assert decode_image(ordinary, cfg)[0].shape == (300, 200, 3)  # an image decoded in full...
    assert Image.MAX_IMAGE_PIXELS == PILLOW_DEFAULT_LIMIT  # ...leaves the process-wide guard on
    with pytest.raises(CharacterError, match=re.escape("12000x12000 (144 megapixels); the limit is 50 megapixels")):
        decode_image(_png_header(12000, 12000), cfg)  # our own limit, read from the header
    with pytest.raises(CharacterError, match="too large to open safely"):
        decode_image(_png_header(20000, 20000), cfg)  # Pillow's guard, still there to refuse it first


def test_the_megapixel_limit_cannot_go_past_pillows_guard():
    from pydantic import ValidationError

    from facecast.characters.library import CharactersConfig

    assert CharactersConfig(max_megapixels=178).max_megapixels == 178
    with pytest.raises(ValidationError, match="less than or equal to 178"):
        CharactersConfig(max_megapixels=400)


def test_select_next_previous(library):
    assert library.select(2).name == "mirror"
    assert library.active.name == "mirror"
    assert library.select("astronaut").name == "astronaut"
    assert library.select("mirror.jpg").name == "mirror"
    assert library.next().name == "astronaut"  # wraps around
    assert library.previous().name == "mirror"
    with pytest.raises(KeyError):
        library.select(3)
    with pytest.raises(KeyError):
        library.select("nobody")
    assert library.active.name == "mirror"  # a failed select changes nothing


def test_select_from_other_threads_while_the_effect_thread_reads(library):
    known = set(map(id, library.characters()))
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            seen.append(id(library.active))

    t = threading.Thread(target=reader)
    t.start()
    for i in range(300):
        library.select(i % 2 + 1)
    stop.set()
    t.join()
    assert seen and set(seen) <= known


def test_add_file_validates_like_folder_files_and_saves(tmp_path):
    folder = tmp_path / "chars"
    folder.mkdir()
    shutil.copy(PORTRAIT, folder / "astronaut.png")
    lib = CharacterLibrary(folder)
    lib.load_all()
    with pytest.raises(CharacterError, match="no face"):
        lib.add_file("grey.png", cv2.imencode(".png", np.full((300, 300, 3), 90, np.uint8))[1].tobytes())
    with pytest.raises(CharacterError):
        lib.add_file("broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(CharacterError, match="plain file name"):
        lib.add_file("../escape.png", PORTRAIT.read_bytes())
    with pytest.raises(CharacterError, match="already exists"):
        lib.add_file("astronaut.png", PORTRAIT.read_bytes())
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.png"]  # nothing written
    data = cv2.imencode(".webp", cv2.flip(cv2.imread(str(PORTRAIT)), 1))[1].tobytes()
    added = lib.add_file("zz-new.webp", data)
    assert added.name == "zz-new" and (folder / "zz-new.webp").read_bytes() == data
    assert lib.names() == ["astronaut", "zz-new"]
    assert lib.active.name == "astronaut"  # adding does not switch
    assert lib.select(2) is added


def test_character_check_command_and_tool(folder):
    result = run_facecast("character", "check", str(folder / "astronaut.png"), str(folder / "noface.jpg"))
    assert result.returncode == 1
    assert f"OK      {folder / 'astronaut.png'}" in result.stdout
    assert "REFUSED" in result.stdout and "no face found" in result.stdout
    ok = run_facecast("character", "check", str(folder / "mirror.jpg"))
    assert ok.returncode == 0, ok.stderr
    import subprocess
    import sys

    from tests.conftest import REPO, facecast_env

    tool = subprocess.run(
        [sys.executable, str(REPO / "tools" / "test_character.py"), str(folder / "huge.png")],
        capture_output=True,
        text=True,
        timeout=120,
        env=facecast_env(),
    )
    assert tool.returncode == 1 and "megapixels" in tool.stdout


@pytest.mark.slow
def test_daemon_streams_with_bad_files_in_the_character_folder(folder, tmp_path):
    out = tmp_path / "out.mp4"
    result = run_facecast(
        "run",
        "--set",
        "capture.source=synthetic",
        "--set",
        "capture.width=320",
        "--set",
        "capture.height=240",
        "--set",
        f"characters.dir={folder}",
        "--set",
        "effect.active=animate",
        "--set",
        "effect.animate.width=256",
        "--set",
        "effect.animate.height=256",
        "--set",
        "outputs.preview.enabled=false",
        "--set",
        "outputs.record.enabled=true",
        "--set",
        f"outputs.record.path={out}",
        "--set",
        "control.enabled=false",
        "--frames",
        "30",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "huge.png refused" in result.stderr and "noface.jpg refused" in result.stderr
    from tests.conftest import count_frames

    assert count_frames(out) == 30
