"""URLs and names: a stalling server times out on both decode paths, a complete one scores as the local file,
and only network schemes read as URLs (a local file's name never reads as an FFmpeg protocol)."""
from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support import BIKES, CARPHONE, NoDecodeCapture, child_processes, growing_ts, needs_ffmpeg

import kvqe
from kvqe.errors import BadInputError
from kvqe.sdk import sources, video_files
from kvqe.sdk.sources import open_source

TIMEOUT = 2.0
MARGIN = 1.5  # seconds past the timeout: thread hand-over, process teardown, a loaded machine


class _Server:
    """An HTTP server on 127.0.0.1 serving one file: whole (with byte ranges), or its first ``stall_after``
    bytes under headers announcing all of it, after which the connection stalls until the server stops
    (``close_early``: closes instead). ``trickle``: (bytes, seconds) sends the body that many bytes at a time,
    waiting between them; ``length=False`` announces no length (a live stream). ``sent`` is set once the
    server has sent all it will before stalling or closing."""

    def __init__(self, payload: bytes, stall_after: int | None = None, *, close_early: bool = False,
                 trickle: tuple[int, float] | None = None, length: bool = True, kind: str = "video/mp4") -> None:
        self.released = threading.Event()
        self.sent = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0] or 0)
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", kind)
                if length:
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("Content-Length", str(len(payload) - start))
                if start and length:
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                self.end_headers()
                end = len(payload) if stall_after is None else max(start, stall_after)
                step, pause = trickle or (end - start, 0.0)
                try:
                    for offset in range(start, end, max(1, step)):
                        self.wfile.write(payload[offset:min(end, offset + step)])
                        self.wfile.flush()
                        if pause and server.released.wait(pause):
                            return
                except OSError:  # the client went away
                    return
                server.sent.set()
                if end < len(payload) and not close_early:
                    server.released.wait(60)  # the stall: valid headers, part of the body, then nothing

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/clip.mp4"

    def stop(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def faststart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """BIKES (10 s) with its index first, so that a client can decode what arrived before a stall."""
    out = tmp_path_factory.mktemp("served") / "bikes.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(BIKES), "-c", "copy", "-movflags", "+faststart", str(out)],
                   check=True)
    return out


def _serve(payload: bytes, stall_after: int | None = None, **options: object) -> Iterator[_Server]:
    server = _Server(payload, stall_after, **options)  # type: ignore[arg-type]
    yield server
    server.stop()


@pytest.fixture
def stalling(faststart: Path) -> Iterator[_Server]:
    payload = faststart.read_bytes()
    yield from _serve(payload, stall_after=len(payload) * 3 // 10)  # about the first 3 of 10 seconds


@pytest.fixture
def complete(faststart: Path) -> Iterator[_Server]:
    yield from _serve(faststart.read_bytes())


@pytest.fixture(scope="module")
def vqa() -> kvqe.sdk.model.Model:
    return kvqe.load("vqa")


def _decoders_stopped(within_s: float) -> bool:
    """Whether every kvqe decoder thread and ffmpeg child ends within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        threads = [t for t in threading.enumerate() if t.name.startswith("kvqe-decoder") and t.is_alive()]
        if not threads and "ffmpeg" not in child_processes():
            return True
        time.sleep(0.02)
    return False


def _stalls(vqa: kvqe.sdk.model.Model, url: str) -> float:
    started = time.monotonic()
    # what arrived, against what the file declares (BIKES: 250 frames, 10 s)
    declared = r"(received|decoded) \d+ of the 250 frames it declares \(\d+\.\d of 10\.0 s\)"
    with pytest.raises(BadInputError, match=rf"within the timeout of {TIMEOUT:g} s \({declared}.*timeout="):
        vqa.score(url, timeout=TIMEOUT)
    return time.monotonic() - started


@needs_ffmpeg
def test_a_stalling_server_times_out_on_the_opencv_path(vqa, stalling: _Server,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _decoder("opencv", monkeypatch)
    elapsed = _stalls(vqa, stalling.url)
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + MARGIN, elapsed
    assert _decoders_stopped(MARGIN)


@needs_ffmpeg
def test_a_stalling_server_times_out_on_the_ffmpeg_path(vqa, stalling: _Server,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources.cv2, "VideoCapture", NoDecodeCapture)
    elapsed = _stalls(vqa, stalling.url)
    assert TIMEOUT * 0.9 <= elapsed <= TIMEOUT + MARGIN, elapsed
    assert _decoders_stopped(MARGIN)


@needs_ffmpeg
def test_a_served_file_scores_as_the_local_file(vqa, complete: _Server, faststart: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    local = vqa.score(faststart)
    via_ffmpeg = vqa.score(complete.url, timeout=TIMEOUT)  # the ffmpeg command decodes URLs where installed
    _decoder("opencv", monkeypatch)
    via_opencv = vqa.score(complete.url, timeout=TIMEOUT)
    for served in (via_ffmpeg, via_opencv):
        assert served.frames == local.frames == 8
        assert served.frame_scores == local.frame_scores and served.score == local.score
    assert _decoders_stopped(MARGIN)


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
def test_a_url_scheme_reads_in_any_case(vqa, complete: _Server, decoder: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _decoder(decoder, monkeypatch)
    lower = vqa.score(complete.url, timeout=TIMEOUT)
    upper = vqa.score(complete.url.replace("http://", "HTTP://"), timeout=TIMEOUT)
    assert upper.frames == lower.frames == 8 and upper.score == lower.score
    assert upper.source.startswith("HTTP://")  # named as given


# ---- a network source that ends early is an error, never a shorter video (issue #34) ------------------------


@pytest.fixture(scope="module")
def live_ts(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """BIKES as MPEG-TS, which declares no length when served without one (as a live stream is)."""
    out = tmp_path_factory.mktemp("served") / "bikes.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(BIKES), "-c", "copy", "-f", "mpegts", str(out)], check=True)
    return out.read_bytes()


def _decoder(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decode URLs by OpenCV, as where the ffmpeg command is not installed; "ffmpeg" is the default where it is."""
    if name == "opencv":
        monkeypatch.setattr(video_files, "find_ffmpeg", lambda: None)


def _short(vqa: kvqe.sdk.model.Model, url: str) -> str:
    """The error of scoring ``url``, which must name what arrived against the 250 frames (10 s) declared."""
    started = time.monotonic()
    with pytest.raises(BadInputError, match=r"\d+ of the 250 frames it declares \(\d+\.\d of 10\.0 s\)") as info:
        vqa.score(url, timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    print(f"refused in {elapsed:.2f} s")  # a hang guard follows, not a speed claim
    assert elapsed < 60 and _decoders_stopped(MARGIN)
    return str(info.value)


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
def test_a_server_that_closes_after_half_a_file_is_an_error(vqa, faststart: Path, decoder: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    _decoder(decoder, monkeypatch)
    payload = faststart.read_bytes()
    for server in _serve(payload, stall_after=len(payload) // 2, close_early=True):
        assert "decode stopped" in _short(vqa, server.url)
        assert server.sent.is_set()


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
def test_a_server_that_stalls_after_half_a_file_is_an_error(vqa, faststart: Path, decoder: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _decoder(decoder, monkeypatch)
    payload = faststart.read_bytes()
    for server in _serve(payload, stall_after=len(payload) // 2):
        assert "within the timeout" in _short(vqa, server.url)


@needs_ffmpeg
def test_a_server_that_trickles_bytes_is_an_error(vqa, faststart: Path) -> None:
    # a few kB every 0.4 s: the index arrives, then each frame takes longer than the decoders wait for
    for server in _serve(faststart.read_bytes(), trickle=(3000, 0.4)):
        _short(vqa, server.url)


@needs_ffmpeg
def test_a_live_source_without_a_length_is_scored_as_a_stream(vqa, live_ts: bytes) -> None:
    for server in _serve(live_ts, length=False, kind="video/mp2t"):
        result = vqa.score(server.url, timeout=TIMEOUT)
    assert result.sampling is not None and result.sampling.how == "stream"
    assert result.duration_s == pytest.approx(10.0, abs=0.1) and 3 <= result.frames <= 8


@needs_ffmpeg
@pytest.mark.parametrize("length", [True, False])
def test_a_served_stream_that_grows_past_the_cap_is_refused(vqa, tmp_path: Path, length: bool) -> None:
    """An MPEG-TS of 160x120 that switches to 640x480 after a second, served with and without a length, under a
    100,000-pixel cap: the ffmpeg command decodes URLs, and its decoder refuses the larger picture."""
    for server in _serve(growing_ts(tmp_path).read_bytes(), length=length, kind="video/mp2t"):
        with pytest.raises(BadInputError, match=r"stream changes to 640x480.*over the cap of 100,000 pixels"):
            vqa.score(server.url, timeout=TIMEOUT, max_pixels=100_000)
    assert _decoders_stopped(MARGIN)


# ---- names and schemes -----------------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A real ok.mp4, a.mp4 and b.mp4 beside random-bytes files named file:ok.mp4 and concat:a.mp4|b.mp4."""
    for name in ("ok.mp4", "a.mp4", "b.mp4"):
        shutil.copy(CARPHONE, tmp_path / name)
    noise = np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes()
    (tmp_path / "file:ok.mp4").write_bytes(noise)
    (tmp_path / "concat:a.mp4|b.mp4").write_bytes(noise)
    return tmp_path


@pytest.mark.parametrize("name", ["file:ok.mp4", "concat:a.mp4|b.mp4"])
def test_a_local_name_that_looks_like_a_protocol_is_read_as_that_file(
    vqa, folder: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folder)
    for source in (name, folder / name, str(folder / name)):
        with pytest.raises(BadInputError, match="cannot open .* as a video"):
            vqa.score(source)
    assert vqa.score("ok.mp4").frames == 4  # the real file beside it is fine


@pytest.mark.parametrize("scheme", ["file", "concat", "subfile", "pipe", "data", "crypto"])
def test_ffmpeg_protocols_are_refused_unless_asked(folder: Path, scheme: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    with pytest.raises(BadInputError, match=rf"reads '{scheme}:' URLs only when asked.*protocols=\['{scheme}'\]"):
        open_source(f"{scheme}:ok-missing.mp4")


def test_an_allowed_protocol_is_read(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder)
    with open_source("concat:ok.mp4|b.mp4", protocols="concat") as source:  # no such file: FFmpeg's concat
        assert sum(1 for _ in source) >= 120


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
def test_both_decoders_read_a_strange_name_as_that_file(tmp_path: Path, decoder: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(BIKES, tmp_path / "ok.mp4")  # 640x272: what a protocol reading of the name would give
    shutil.copy(CARPHONE, tmp_path / "file:ok.mp4")  # 176x144: the file itself
    if decoder == "ffmpeg":
        monkeypatch.setattr(sources.cv2, "VideoCapture", NoDecodeCapture)
    monkeypatch.chdir(tmp_path)
    with open_source("file:ok.mp4") as source:
        frames = [frame.image.shape for frame in source]
    assert frames == [(144, 176, 3)] * 120
