"""Pixel caps: a frame larger than max_pixels is refused from its header, before it is decoded, quickly and
without the memory its decode would take (measured in fresh processes); and OpenCV's own errors name the
source."""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import needs_ffmpeg

import kvqe
from kvqe.errors import BadInputError
from kvqe.sdk.ffmpeg_decode import FrameTooLargeError, _read_ppm
from kvqe.sdk.images import read_image
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS
from kvqe.sdk.pipes import open_raw_pipe
from kvqe.sdk.sources import open_source

# the refusal costs at most this much memory beyond the imports: a 16000x16000 decode takes 768 MB for its
# BGR frame alone; opening an H.264 stream costs FFmpeg's probe of one frame (about 160 MB at 8192x8192)
IMAGE_RSS_MB, VIDEO_RSS_MB, SECONDS = 64, 300, 3.0


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def one_colour_png(path: Path, width: int, height: int) -> Path:
    """A valid RGB PNG of one colour, deflated fast: a few MB on disk at 16000x16000."""
    row = b"\x00" + bytes((200, 120, 90)) * width
    deflate = zlib.compressobj(1)
    body = b"".join(deflate.compress(row) for _ in range(height)) + deflate.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + _chunk(b"IDAT", body) + _chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("big")
    one_colour_png(folder / "huge.png", 16000, 16000)  # over Pillow's own limit too
    one_colour_png(folder / "large.png", 8000, 5000)  # over the cap, under Pillow's limit
    return folder


@pytest.fixture(scope="module")
def big_h264(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("big") / "8k_square.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=8192x8192", "-frames:v", "2",
                    "-c:v", "libx264", "-preset", "ultrafast", str(out)], check=True)
    return out


_MEASURE = """
import json, resource, sys, time
import kvqe
from kvqe.errors import KvqeError
call, path = sys.argv[1], sys.argv[2]
run = {"open_source": lambda: kvqe.sdk.sources.open_source(path),
       "score": lambda: kvqe.load("vqa").score(path),
       "enhance": lambda: kvqe.load("sr").enhance(path)}[call]
import kvqe.sdk.loader, kvqe.sdk.sources
kvqe.load("sr" if call == "enhance" else "vqa")
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.monotonic()
try:
    run()
    error = None
except KvqeError as exc:
    error = f"{type(exc).__name__}: {exc}"
seconds = time.monotonic() - started
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({"error": error, "seconds": seconds, "growth_mb": growth}))
"""


def measure(call: str, path: Path) -> dict[str, object]:
    """Error, seconds and peak-RSS growth of ``call(path)`` in a fresh process (models loaded first)."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, call, str(path)], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("call", ["open_source", "score", "enhance"])
def test_a_huge_png_is_refused_from_its_header(media: Path, call: str) -> None:
    huge = media / "huge.png"
    assert huge.stat().st_size < 4_000_000  # 768 MB of pixels
    result = measure(call, huge)
    assert result["error"] is not None and "FrameTooLargeError" in str(result["error"])
    assert "256,000,000 pixels" in str(result["error"]) and f"{DEFAULT_MAX_PIXELS:,}" in str(result["error"])
    assert float(result["seconds"]) < SECONDS and float(result["growth_mb"]) < IMAGE_RSS_MB, result


def test_an_image_over_the_cap_is_named_with_its_size(media: Path) -> None:
    with pytest.raises(FrameTooLargeError, match=r"large.png: 8000x5000 is 40,000,000 pixels, over the cap of "
                                                 r"33,177,600 pixels; refused before decoding.*max_pixels="):
        read_image(media / "large.png")
    assert read_image(media / "large.png", max_pixels=40_000_000).shape == (5000, 8000, 3)


@needs_ffmpeg
@pytest.mark.parametrize("call", ["open_source", "score"])
def test_an_8k_square_h264_is_refused_before_its_first_frame(big_h264: Path, call: str) -> None:
    assert big_h264.stat().st_size < 1_000_000
    result = measure(call, big_h264)
    assert "FrameTooLargeError" in str(result["error"]) and "8192x8192 is 67,108,864 pixels" in str(result["error"])
    assert float(result["seconds"]) < SECONDS and float(result["growth_mb"]) < VIDEO_RSS_MB, result


@needs_ffmpeg
def test_the_cap_can_be_raised(big_h264: Path) -> None:
    with open_source(big_h264, max_pixels=8192 * 8192) as source:
        assert next(iter(source)).image.shape == (8192, 8192, 3)


def test_ffmpeg_frames_are_checked_from_their_ppm_header() -> None:
    stream = io.BytesIO(b"P6\n9000 9000\n255\n")  # no pixels follow: they must not be waited for
    with pytest.raises(FrameTooLargeError, match="9000x9000 is 81,000,000 pixels"):
        _read_ppm(stream, "clip.mkv", DEFAULT_MAX_PIXELS)
    pixels = bytes(range(12))
    image = _read_ppm(io.BytesIO(b"P6\n2 2\n255\n" + pixels), "clip.mkv", 4)
    assert image is not None and image.tobytes() == np.frombuffer(pixels, np.uint8).reshape(2, 2, 3)[..., ::-1].tobytes()


def test_raw_pipes_arrays_and_iterables_are_checked_by_shape() -> None:
    with pytest.raises(FrameTooLargeError, match="-: 16000x16000"):
        open_raw_pipe(io.BytesIO(b""), 16000, 16000)
    frame = np.broadcast_to(np.zeros(3, np.uint8), (16000, 16000, 3))  # no memory behind it: nothing is copied
    with pytest.raises(FrameTooLargeError, match="<image>: 16000x16000"):
        open_source(frame)
    with pytest.raises(FrameTooLargeError, match="<frames>: item 1: 16000x16000"):
        list(open_source(iter([np.zeros((4, 4, 3), np.uint8), frame])))
    with pytest.raises(FrameTooLargeError, match="image: 16000x16000"):
        kvqe.load("sr").enhance(frame)
    small = np.zeros((20, 30, 3), np.uint8)
    with pytest.raises(FrameTooLargeError, match="30x20 is 600 pixels, over the cap of 500 pixels"):
        open_source(small, max_pixels=500)
    assert len(list(open_source(small, max_pixels=None))) == 1


@pytest.mark.parametrize("value", [0, -1, 1.5, "8K", True])
def test_bad_max_pixels(value: object) -> None:
    with pytest.raises(BadInputError, match="max_pixels must be an integer from 1"):
        open_source(np.zeros((4, 4, 3), np.uint8), max_pixels=value)  # type: ignore[arg-type]


def test_an_image_over_opencvs_own_limit_is_a_bad_input(tmp_path: Path, astronaut_bgr: np.ndarray) -> None:
    """OpenCV's pixel limit (OPENCV_IO_MAX_IMAGE_PIXELS, read once per process) raises a cv2.error."""
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), astronaut_bgr)
    script = ("import sys; from kvqe.errors import BadInputError; from kvqe.sdk.images import read_image\n"
              "try:\n    read_image(sys.argv[1], max_pixels=None)\n"
              "except BadInputError as exc:\n    print(exc)\n")
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": "1000"}
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env,
                          check=True)
    assert f"image {path}: OpenCV cannot decode it" in done.stdout
