"""Demuxers on an allow-list: an uploaded playlist naming another file on the server is refused by both
decoders (nothing of that file reaches any output), and is read only when the caller allows its demuxer."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner
from support import needs_ffmpeg

from kvqe.cli import main
from kvqe.errors import BadInputError
from kvqe.sdk import targets
from kvqe.sdk.demuxers import demuxer_names, indexless_format
from kvqe.sdk.sources import open_source

SAMPLE = Path(__file__).resolve().parents[1] / "kvqe" / "samples" / "astronaut_pan.mp4"
SECRET = "secret-of-another-tenant"


def _playlist(line: str) -> bytes:
    return (f"#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:1\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:1.0,\n{line}\n"
            "#EXT-X-ENDLIST\n").encode()


@pytest.fixture
def uploads(tmp_path: Path) -> Path:
    """Another tenant's clip (``{SECRET}.ts``, 5 frames) and uploads naming it: by path and by file:// URL,
    each as ``.m3u8`` and renamed ``.mp4``."""
    secret = tmp_path / f"{SECRET}.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:d=1:r=5", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(secret)], check=True)
    for kind, line in (("path", str(secret)), ("url", secret.as_uri())):
        for suffix in (".m3u8", ".mp4"):
            (tmp_path / f"upload-{kind}{suffix}").write_bytes(_playlist(line))
    return tmp_path


UPLOADS = ["upload-path.m3u8", "upload-url.m3u8", "upload-path.mp4", "upload-url.mp4"]


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@needs_ffmpeg
@pytest.mark.parametrize("name", UPLOADS)
@pytest.mark.parametrize("command", ["score", "enhance"])
def test_an_uploaded_playlist_reads_no_other_file(uploads: Path, name: str, command: str) -> None:
    out = uploads / "out" / "leak.mp4"
    for as_json in ([], ["--json"]):
        args = [command, str(uploads / name), *(["-o", str(out)] if command == "enhance" else []), *as_json]
        code, output = _run(*args)
        assert code == 2, output
        assert "hls" in output and "--demuxers hls" in output
        assert SECRET not in output and '"score"' not in output
        assert not out.exists() and not out.parent.exists()


@needs_ffmpeg
def test_a_playlist_given_as_a_file_url_is_refused_by_the_decoder(uploads: Path) -> None:
    url = (uploads / "upload-path.m3u8").as_uri()
    code, output = _run("score", url, "--protocols", "file", "--json")
    assert code == 2 and SECRET not in output and "demuxers=" in output


@needs_ffmpeg
def test_an_allowed_demuxer_reads_the_playlist(uploads: Path) -> None:
    code, output = _run("score", str(uploads / "upload-url.m3u8"), "--demuxers", "hls", "--json")
    assert code == 0, output
    assert json.loads(output)["frames"] == 1
    out = uploads / "up.mp4"
    code, output = _run("enhance", str(uploads / "upload-path.m3u8"), "-o", str(out), "--demuxers", "hls")
    assert code == 0 and out.exists(), output


class _BlindCapture:
    """An OpenCV that opens anything and decodes nothing: the source falls through to the ffmpeg command."""

    def __init__(self, *args: object) -> None:
        pass

    def isOpened(self) -> bool:
        return True

    def read(self) -> tuple[bool, None]:
        return False, None

    def get(self, key: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


@needs_ffmpeg
@pytest.mark.parametrize("decoder", ["opencv", "ffmpeg"])
@pytest.mark.parametrize("name", UPLOADS)
def test_each_decoder_refuses_a_playlist_on_its_own(uploads: Path, name: str, decoder: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(targets, "check_local_file", lambda *args: None)  # the sniff out of the way
    if decoder == "ffmpeg":
        monkeypatch.setattr(cv2, "VideoCapture", _BlindCapture)
    with pytest.raises(BadInputError) as refused, open_source(uploads / name) as source:
        list(source)
    assert SECRET not in str(refused.value)
    if decoder == "ffmpeg" or name.endswith(".m3u8"):  # OpenCV's newer FFmpeg takes no HLS named .mp4 anyway
        with open_source(uploads / name, demuxers=["hls"]) as source:
            assert len(list(source)) == 5


def test_opencv_options_are_set_only_while_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "analyzeduration;1000000")
    errors: list[BaseException] = []

    def score(demuxers: list[str]) -> None:
        try:
            for _ in range(3):
                with open_source(SAMPLE, demuxers=demuxers) as source:
                    assert sum(1 for _ in source) == 50
        except BaseException as exc:  # noqa: BLE001 (reported by the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=score, args=(d,)) for d in ([], ["hls"], ["dash", "concat"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] == "analyzeduration;1000000"


@pytest.mark.parametrize("bad", ["hls;rm", "a b", "../x", 7, ["hls", None]])
def test_a_demuxer_name_is_a_plain_name(bad: object) -> None:
    with pytest.raises(BadInputError, match="demuxers must be FFmpeg demuxer names"):
        demuxer_names(bad)  # type: ignore[arg-type]
    assert demuxer_names("HLS, dash") == {"hls", "dash"}


@needs_ffmpeg
def test_containers_without_a_frame_index_are_recognised_by_their_bytes(tmp_path: Path) -> None:
    """MPEG-TS, M2TS, MPEG-PS, FLV and elementary streams are read as streams (their frame count is an estimate
    and their pictures may change size); the indexed containers are not, whatever their name says."""
    expected = {"mpegts": "MPEG-TS", "mpeg": "MPEG-PS", "flv": "FLV", "h264": "an elementary stream",
                "mp4": None, "matroska": None, "avi": None, "ivf": None}
    for muxer, name in expected.items():
        path = tmp_path / f"clip-{muxer}.mp4"  # the suffix lies: the bytes decide
        codec = "libvpx" if muxer == "ivf" else "mpeg2video" if muxer == "mpeg" else "libx264"
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:d=0.2:r=25", "-c:v", codec,
                        "-f", muxer, str(path)], check=True)
        assert indexless_format(path) == name, muxer
    m2ts = tmp_path / "clip.m2ts"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:d=0.2:r=25", "-c:v", "libx264",
                    "-mpegts_m2ts_mode", "1", "-f", "mpegts", str(m2ts)], check=True)
    assert indexless_format(m2ts) == "MPEG-TS (M2TS)"
    assert indexless_format(SAMPLE) is None
    large_ftyp = tmp_path / "large-ftyp.mp4"  # a first box of 256-511 bytes starts 00 00 01, as a start code does
    large_ftyp.write_bytes(b"\x00\x00\x01\x10ftypisom" + bytes(264))
    assert indexless_format(large_ftyp) is None
