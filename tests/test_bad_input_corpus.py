"""Bad input of every kind a server meets: each case gets its documented exit code, a message naming the
problem, no traceback, and leaves nothing behind (no output, no temporary file, no child process).

The commands run in-process through click's runner (fast); SIGTERM and a closed stdout need a real
process and are tested at the end.
"""
from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from support import BIN, CARPHONE, child_processes, growing_ts, needs_ffmpeg

from kvqe.cli import main
from kvqe.sdk.loader import embedded_bundle_path

SAMPLES = Path(__file__).resolve().parents[1] / "kvqe" / "samples"
VIDEO = SAMPLES / "astronaut_pan.mp4"
PHOTO = SAMPLES / "astronaut.png"
SIGNAL_GRACE_S = 600  # a hang guard, not a speed claim (the machine may be loaded)


@dataclass(frozen=True)
class Case:
    """One kind of bad input: ``make(tmp)`` builds it and returns the command's arguments (and stdin)."""

    name: str
    make: Callable[[Path], tuple[list[str], bytes | None]]
    code: int
    fragment: str  # a piece of the message (stderr, or the source's JSON error), case-insensitive
    usage: bool = False  # refused by the option parser: a usage message, no JSON record


def _args(*args: str, stdin: bytes | None = None) -> Callable[[Path], tuple[list[str], bytes | None]]:
    return lambda tmp: ([a.replace("{tmp}", str(tmp)) for a in args], stdin)


def _file(name: str, data: bytes, *command: str) -> Callable[[Path], tuple[list[str], bytes | None]]:
    """Write ``data`` as ``name`` in the case's folder; ``command`` names it as ``{file}``."""

    def make(tmp: Path) -> tuple[list[str], bytes | None]:
        (tmp / name).write_bytes(data)
        return [a.replace("{file}", str(tmp / name)).replace("{tmp}", str(tmp)) for a in command], None

    return make


def _image(name: str, image: np.ndarray, *command: str) -> Callable[[Path], tuple[list[str], bytes | None]]:
    ok, data = cv2.imencode(Path(name).suffix, image)
    assert ok
    return _file(name, data.tobytes(), *command)


def _png_of_size(width: int, height: int) -> bytes:
    """A valid one-colour 8-bit RGB PNG of any size, built row by row so the test never holds the pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    compressor = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * (3 * width)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _bundle(edit: Callable[[dict], None] | None = None, *command: str,
            damage: Callable[[Path], None] | None = None) -> Callable[[Path], tuple[list[str], bytes | None]]:
    """A copy of the embedded vqa bundle in the case's folder, its manifest edited / its files damaged."""

    def make(tmp: Path) -> tuple[list[str], bytes | None]:
        bundle = tmp / "bundle"
        shutil.copytree(embedded_bundle_path("vqa"), bundle)
        if edit is not None:
            manifest = json.loads((bundle / "manifest.json").read_text())
            edit(manifest)
            (bundle / "manifest.json").write_text(json.dumps(manifest))
        if damage is not None:
            damage(bundle)
        return [a.replace("{bundle}", str(bundle)) for a in command], None

    return make


def _set(path: str, value: object) -> Callable[[dict], None]:
    """An edit setting the manifest field at a dotted path (list indices as numbers)."""

    def edit(manifest: dict) -> None:
        *parents, last = path.split(".")
        node: object = manifest
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
        if value is _DELETE:
            del node[last]  # type: ignore[union-attr, index]
        else:
            node[int(last) if isinstance(node, list) else last] = value  # type: ignore[index]

    return edit


_DELETE = object()


def _flip_byte(name: str) -> Callable[[Path], None]:
    def damage(bundle: Path) -> None:
        data = bytearray((bundle / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (bundle / name).write_bytes(bytes(data))

    return damage


def _carphone_bytes(tmp: Path, command: tuple[str, ...], index_first: bool = True) -> bytes:
    """carphone (120 frames) as MP4 bytes, its index in front (faststart) or at the end; for ``enhance`` scaled
    to 64x48, so that upscaling the frames before a cut takes moments."""
    whole = tmp / "whole.mp4"
    codec = ["-vf", "scale=64:48", "-c:v", "libx264", "-crf", "18"] if command[0] == "enhance" else ["-c", "copy"]
    flags = ["-movflags", "+faststart"] if index_first else []
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), *codec, *flags, str(whole)], check=True)
    data = whole.read_bytes()
    whole.unlink()
    return data


def _truncated(*command: str, index_first: bool = True) -> Callable[[Path], tuple[list[str], bytes | None]]:
    """The first half of a real clip as ``{file}``: its index (moov) in front, as a streamed upload has it,
    so the container opens and declares more frames than arrive; or at the end, so nothing opens."""

    def make(tmp: Path) -> tuple[list[str], bytes | None]:
        data = _carphone_bytes(tmp, command, index_first)
        return _file("cut.mp4", data[: len(data) // 2], *command)(tmp)

    return make


def _audio_only(tmp: Path) -> tuple[list[str], bytes | None]:
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac",
                    str(tmp / "audio.mp4")], check=True)
    return ["score", str(tmp / "audio.mp4")], None


def _huge_video(tmp: Path) -> tuple[list[str], bytes | None]:
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=c=gray:s=8192x8192:d=0.08:r=25",
                    "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(tmp / "huge.mp4")],
                   check=True)
    return ["score", str(tmp / "huge.mp4")], None


def _growing_ts(tmp: Path) -> tuple[list[str], bytes | None]:
    """An MPEG-TS whose pictures grow from 160x120 to 640x480 after a second, scored under a 100,000-pixel cap."""
    return ["score", str(growing_ts(tmp)), "--max-pixels", "100000"], None


def _lavfi_video(name: str, size: str, seconds: float = 1.0) -> Callable[[Path], tuple[list[str], bytes | None]]:
    """A lossless test-pattern video of ``size`` as ``{tmp}/name``, to score."""

    def make(tmp: Path) -> tuple[list[str], bytes | None]:
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"testsrc=s={size}:d={seconds}:r=25",
                        "-c:v", "ffv1", str(tmp / name)], check=True)
        return ["score", str(tmp / name)], None

    return make


def _protocol_names(name: str) -> Callable[[Path], tuple[list[str], bytes | None]]:
    """A random-bytes file whose name reads as an FFmpeg protocol, beside the real video it names."""

    def make(tmp: Path) -> tuple[list[str], bytes | None]:
        shutil.copy(VIDEO, tmp / "ok.mp4")
        shutil.copy(VIDEO, tmp / "a.mp4")
        shutil.copy(VIDEO, tmp / "b.mp4")
        (tmp / name).write_bytes(np.random.default_rng(0).bytes(4096))
        return ["score", name], None  # relative, as a user types it in that folder

    return make


def _served_half(*command: str) -> Callable[[Path], tuple[list[str], bytes | None]]:
    """A server on 127.0.0.1 that announces a whole faststart clip and closes after half of it; ``command``
    names its URL as ``{url}``. The server (a daemon thread) closes every connection it answers."""

    def make(tmp: Path) -> tuple[list[str], bytes | None]:
        payload = _carphone_bytes(tmp, command)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload[: len(payload) // 2])

            def log_message(self, *args: object) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/clip.mp4"
        return [a.replace("{url}", url).replace("{tmp}", str(tmp)) for a in command], None

    return make


HLS = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n{VIDEO.as_uri()}\n#EXT-X-ENDLIST\n".encode()
FFCONCAT = f"ffconcat version 1.0\nfile '{VIDEO}'\n".encode()
DASH = b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"></MPD>\n'
SDP = b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nm=video 5004 RTP/AVP 96\r\n"
RAW = np.zeros((16, 16, 3), np.uint8).tobytes()
RGBA = np.full((64, 64, 4), 128, np.uint8)
NOISE = np.random.default_rng(1).bytes(10_000)

CASES = [
    # sources
    Case("missing file", _args("score", "{tmp}/none.mp4"), 2, "no such file"),
    Case("empty file", _file("empty.mp4", b"", "score", "{file}"), 2, "empty"),
    Case("directory as source", _args("score", "{tmp}"), 2, "directory"),
    Case("text named .mp4", _file("text.mp4", b"hello, world\n" * 100, "score", "{file}"), 2, "cannot open"),
    Case("random bytes named .mp4", _file("noise.mp4", NOISE, "score", "{file}"), 2, "noise.mp4"),
    Case("random bytes named .mkv", _file("noise.mkv", NOISE, "score", "{file}"), 2, "noise.mkv"),
    Case("truncated video", _truncated("score", "{file}"), 2, "truncated"),
    Case("truncated video without its index", _truncated("score", "{file}", index_first=False), 2, "corrupt"),
    Case("audio only", _audio_only, 2, "audio.mp4"),
    Case("random bytes named .png", _file("noise.png", NOISE, "score", "{file}"), 2, "cannot read"),
    Case("png header only", _file("head.png", _png_of_size(64, 64)[:40], "score", "{file}"), 2, "head.png"),
    Case("png with alpha", _image("rgba.png", RGBA, "score", "{file}"), 2, "alpha"),
    Case("grey 1x1 png (converted, then too small)", _image("grey1.png", np.zeros((1, 1), np.uint8), "score",
                                                            "{file}"), 2, "unscorable"),
    Case("1x1 video", _lavfi_video("one.mkv", "1x1"), 2, "unscorable"),
    Case("16x16 video", _lavfi_video("sixteen.mkv", "16x16"), 2, "32 pixels a side"),
    Case("MPEG-TS growing past the pixel cap mid-stream", _growing_ts, 2, "stream changes to 640x480"),
    Case("1x1 image", _image("one.png", np.zeros((1, 1, 3), np.uint8), "score", "{file}"), 2, "unscorable"),
    Case("16x16 image", _image("sixteen.png", np.zeros((16, 16, 3), np.uint8), "score", "{file}"), 2,
         "unscorable"),
    Case("video shorter than one keyframe", _lavfi_video("short.mkv", "64x64", 0.2), 2, "before the first keyframe"),
    Case("png over the pixel cap", _file("bomb.png", _png_of_size(16000, 16000), "score", "{file}"), 2, "pixels"),
    Case("video over the pixel cap", _huge_video, 2, "pixels"),
    Case("a file named file:ok.mp4", _protocol_names("file:ok.mp4"), 2, "file:ok.mp4"),
    Case("a file named concat:a.mp4|b.mp4", _protocol_names("concat:a.mp4|b.mp4"), 2, "concat:a.mp4|b.mp4"),
    Case("url scheme not allowed", _args("score", "ftp://127.0.0.1/clip.mp4"), 2, "ftp"),
    Case("url scheme not allowed, in capitals", _args("score", "FTP://127.0.0.1/clip.mp4"), 2, "'ftp:' urls"),
    Case("subfile protocol", _args("score", "subfile:,start,0,end,0,:/etc/passwd"), 2, "subfile"),
    Case("url closed after half the file", _served_half("score", "{url}", "--timeout", "10"), 2,
         "of the 120 frames it declares"),
    Case("url closed after half the file, to gate", _served_half("gate", "{url}", "--min-score", "50"), 2,
         "of the 120 frames it declares"),
    Case("url closed after half the file, to enhance", _served_half("enhance", "{url}", "-o", "{tmp}/up.mp4"), 2,
         "of the 120 frames it declares"),
    Case("url nobody answers", _args("score", "http://127.0.0.1:9/clip.mp4", "--timeout", "3"), 2, "127.0.0.1:9"),
    Case("name too long", _args("score", "{tmp}/" + "a" * 300 + ".mp4"), 2, "too long"),
    Case("hls playlist naming a local file", _file("upload.m3u8", HLS, "score", "{file}"), 2, "--demuxers hls"),
    Case("hls playlist named .mp4", _file("upload.mp4", HLS, "score", "{file}"), 2, "--demuxers hls"),
    Case("hls playlist to enhance", _file("upload.m3u8", HLS, "enhance", "{file}", "-o", "{tmp}/up.mp4"), 2,
         "--demuxers hls"),
    Case("hls playlist to gate", _file("upload.m3u8", HLS, "gate", "{file}", "--min-score", "50"), 2,
         "--demuxers hls"),
    Case("hls playlist as a file url", _file("upload.m3u8", HLS, "score", "file://{file}", "--protocols", "file"), 2,
         "demuxers="),
    Case("ffconcat list", _file("list.txt.mp4", FFCONCAT, "score", "{file}"), 2, "--demuxers concat"),
    Case("dash manifest", _file("upload.mpd", DASH, "score", "{file}"), 2, "--demuxers dash"),
    Case("sdp description", _file("upload.sdp", SDP, "score", "{file}"), 2, "--demuxers sdp"),
    Case("demuxer name not a name", _args("score", str(VIDEO), "--demuxers", "hls;rm"), 2, "demuxer names"),
    Case("fps zero", _args("score", str(VIDEO), "--fps", "0"), 2, "fps"),
    Case("fps not a number", _args("score", str(VIDEO), "--fps", "nan"), 2, "fps"),
    Case("per-second infinite", _args("score", str(VIDEO), "--per-second", "inf"), 2, "--per-second"),
    Case("max-frames huge", _args("score", str(VIDEO), "--max-frames", "1000000000"), 2, "--max-frames"),
    Case("timeout not a number", _args("score", str(VIDEO), "--timeout", "nan"), 2, "--timeout"),
    Case("max-pixels negative", _args("score", str(VIDEO), "--max-pixels", "-1"), 2, "--max-pixels"),
    Case("threads negative", _args("score", str(VIDEO), "--threads", "-1"), 2, "--threads"),
    Case("min-score not a number", _args("gate", str(VIDEO), "--min-score", "nan"), 2, "--min-score"),
    Case("min-score out of the score range", _args("gate", str(VIDEO), "--min-score", "1000"), 2, "min_score"),
    Case("segment-seconds zero", _args("gate", str(VIDEO), "--min-score", "50", "--segment-seconds", "0"), 2,
         "--segment-seconds"),
    Case("policy default infinite", _file("policy.toml", b"default = inf\n", "gate", str(VIDEO), "--policy",
                                          "{file}"), 2, "default must be"),
    Case("policy threshold not a number", _file("policy.toml", b'[thresholds]\n"720p" = nan\n', "gate", str(VIDEO),
                                                "--policy", "{file}"), 2, "thresholds.'720p' must be"),
    Case("policy max_gain not a number", _file("policy.toml", b"default = 50\nmax_gain = nan\n", "gate", str(VIDEO),
                                               "--policy", "{file}"), 2, "max_gain must be"),
    # raw frames on stdin
    Case("stdin without --raw", _args("score", "-", stdin=RAW), 2, "--raw"),
    Case("raw size malformed", _args("score", "-", "--raw", "16by16", stdin=RAW), 2, "WxH"),
    Case("raw size zero", _args("score", "-", "--raw", "0x16", stdin=RAW), 2, "positive"),
    Case("raw stream ends mid-frame", _args("score", "-", "--raw", "16x16", "--fps", "25", stdin=RAW + RAW[:100]), 2,
         "middle of a frame"),
    Case("raw stream empty", _args("score", "-", "--raw", "16x16", "--fps", "25", stdin=b""), 2, "no frames"),
    Case("raw stream without --fps", _args("score", "-", "--raw", "16x16", stdin=RAW), 2, "needs --fps"),
    Case("stdin twice", _args("score", "-", "-", "--raw", "16x16", stdin=RAW), 2, "once"),
    # bundles and options
    Case("no such bundle", _args("score", str(VIDEO), "--bundle", "{tmp}/nothing"), 2, "no bundle"),
    Case("folder without manifest", _args("score", str(VIDEO), "--bundle", "{tmp}"), 2, "manifest.json"),
    Case("sr bundle for score", _args("score", str(VIDEO), "--bundle", "sr"), 2, "needs a vqa bundle"),
    Case("unknown backend", _args("score", str(VIDEO), "--backend", "nope"), 2, "'nope' is not one of", usage=True),
    Case("precision not in the bundle", _args("score", str(VIDEO), "--precision", "int8"), 2, "no auto/int8"),
    Case("backend not installed", _args("score", str(VIDEO), "--backend", "tensorrt"), 2, "tensorrt"),
    Case("manifest not json", _bundle(None, "score", str(VIDEO), "--bundle", "{bundle}",
                                      damage=lambda b: (b / "manifest.json").write_text("{not json")), 2, "json"),
    Case("deployable as a string", _bundle(_set("artifacts.0.deployable", "false"), "score", str(VIDEO), "--bundle",
                                           "{bundle}"), 2, "deployable"),
    Case("bytes 1e999", _bundle(None, "score", str(VIDEO), "--bundle", "{bundle}", damage=lambda b: (
        b / "manifest.json").write_text((b / "manifest.json").read_text().replace(
            '"bytes": 4743241', '"bytes": 1e999'))), 2, "bytes"),
    Case("bytes 10**18", _bundle(_set("artifacts.0.bytes", 10**18), "info", "{bundle}"), 2, "the manifest says"),
    Case("bytes 10**18 to enhance", _bundle(_set("artifacts.0.bytes", 10**18), "enhance", str(PHOTO), "-o",
                                            "{bundle}/../out.png", "--bundle", "{bundle}"), 2, "the manifest says"),
    Case("manifest key given twice", _bundle(None, "score", str(VIDEO), "--bundle", "{bundle}", damage=lambda b: (
        b / "manifest.json").write_text((b / "manifest.json").read_text().replace(
            '"deployable": true', '"deployable": false, "deployable": true', 1))), 2, "appears twice"),
    Case("pixel value range 1e300", _bundle(_set("input.value_range", [0, 1e300]), "score", str(VIDEO), "--bundle",
                                            "{bundle}"), 2, "not a pixel value range"),
    Case("artifacts not a list", _bundle(_set("artifacts", 5), "score", str(VIDEO), "--bundle", "{bundle}"), 2,
         "artifacts"),
    Case("per_second zero", _bundle(_set("input.sampling.per_second", 0), "score", str(VIDEO), "--bundle",
                                    "{bundle}"), 2, "per_second"),
    Case("score_range missing", _bundle(_set("output.score_range", _DELETE), "score", str(VIDEO), "--bundle",
                                        "{bundle}"), 2, "score_range"),
    Case("unknown runtime option", _bundle(_set("artifacts.0.runtime", {"turbo": True}), "score", str(VIDEO),
                                           "--bundle", "{bundle}"), 2, "turbo"),
    Case("unknown schema version", _bundle(_set("schema_version", 99), "score", str(VIDEO), "--bundle", "{bundle}"),
         2, "schema_version"),
    Case("tampered weights", _bundle(None, "score", str(VIDEO), "--bundle", "{bundle}",
                                     damage=_flip_byte("model.fp32.onnx")), 2, "sha256"),
    Case("artifact file missing", _bundle(None, "score", str(VIDEO), "--bundle", "{bundle}",
                                          damage=lambda b: (b / "model.fp32.onnx").unlink()), 2, "missing"),
    Case("info on a tampered bundle", _bundle(None, "info", "{bundle}", damage=_flip_byte("model.fp32.onnx")), 2,
         "sha256"),
    Case("verify with tampered validation data", _bundle(None, "verify", "{bundle}",
                                                         damage=_flip_byte("validation.npz")), 2, "validation.npz"),
    # enhance
    Case("vqa bundle for enhance", _args("enhance", str(PHOTO), "-o", "{tmp}/out.png", "--bundle", "vqa"), 2,
         "needs a sr bundle"),
    Case("output onto the input", _file("in.png", PHOTO.read_bytes(), "enhance", "{file}", "-o", "{file}"), 2,
         "overwrite the input"),
    Case("output is a directory", _args("enhance", str(PHOTO), "-o", "{tmp}"), 2, "image output name"),
    Case("output folder is a file", _file("plain", b"x", "enhance", str(PHOTO), "-o", "{file}/out.png"), 2,
         "not a directory"),
    Case("output where nothing can be written", _args("enhance", str(PHOTO), "-o", "/proc/out.png"), 2,
         "cannot write"),
    Case("output name too long", _args("enhance", str(PHOTO), "-o", "{tmp}/" + "b" * 300 + ".png"), 2, "too long"),
    Case("image in, video out", _args("enhance", str(PHOTO), "-o", "{tmp}/out.mp4"), 2, "image output name"),
    Case("video in, image out", _args("enhance", str(VIDEO), "-o", "{tmp}/out.png"), 2, "video output name"),
    Case("truncated video to enhance", _truncated("enhance", "{file}", "-o", "{tmp}/up.mp4"), 2, "truncated"),
    Case("negative tile", _args("enhance", str(PHOTO), "-o", "{tmp}/out.png", "--tile", "-1"), 2, "--tile"),
    Case("tile below 16 pixels", _args("enhance", str(PHOTO), "-o", "{tmp}/out.png", "--tile", "1"), 2, "--tile"),
    Case("h264 into webm", _args("enhance", str(VIDEO), "-o", "{tmp}/out.webm", "--codec", "h264"), 2,
         "takes vp9 or av1 video"),
    Case("unknown video container", _args("enhance", str(VIDEO), "-o", "{tmp}/out.avi"), 2, "unsupported video container"),
    Case("crf out of the codec's range", _args("enhance", str(VIDEO), "-o", "{tmp}/out.mp4", "--crf", "52"), 2,
         "from 0 (best) to 51"),
    Case("unknown codec", _args("enhance", str(VIDEO), "-o", "{tmp}/out.mp4", "--codec", "mpeg2"), 2, "--codec",
         usage=True),
    Case("codec for an image", _args("enhance", str(PHOTO), "-o", "{tmp}/out.png", "--codec", "hevc"), 2,
         "apply to video output"),
    Case("pipe format for a file", _args("enhance", str(VIDEO), "-o", "{tmp}/out.mkv", "--format", "y4m"), 2,
         "applies to '-'"),
    Case("image to stdout", _args("enhance", str(PHOTO), "-o", "-"), 2, "image output name"),
    # other commands
    Case("info on nothing", _args("info", "{tmp}/nothing"), 2, "no bundle"),
    Case("eval labels missing", _args("eval", "--bundle", "vqa", "--labels", "{tmp}/truth.csv"), 2, "truth.csv"),
    Case("eval labels with NaN", _file("truth.csv", b"filename,score\nclip.mp4,nan\n", "eval", "--bundle", "vqa",
                                       "--labels", "{file}"), 2, "nan"),
]


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_the_corpus_is_large_and_its_names_unique() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


# e2e: encoding 8192x8192 frames (the fast tier has test_limits' 8K video)
E2E_CASES = ("video over the pixel cap",)


@needs_ffmpeg
@pytest.mark.parametrize("case", [
    pytest.param(case, id=case.name, marks=[pytest.mark.e2e] if case.name in E2E_CASES else []) for case in CASES])
def test_bad_input_gets_its_exit_code_and_a_plain_message(case: Case, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    args, stdin = case.make(tmp_path)
    before = _listing(tmp_path)
    for as_json in (False, True):
        result = CliRunner().invoke(main, [*args, "--json"] if as_json else args, input=stdin)
        assert result.exit_code == case.code, (case.name, result.exit_code, result.output, result.exception)
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
            result.exception
        assert "Traceback" not in result.output
        assert case.fragment.lower() in result.output.lower(), (case.name, result.output)
        if as_json and not case.usage:  # with `-o -` stdout is the video: the JSON record goes to stderr
            to_stdout = "-o" in args and args[args.index("-o") + 1] == "-"
            stream = result.stderr if to_stdout else result.stdout
            records = [json.loads(line) for line in stream.splitlines() if line.startswith("{")]
            assert records and "error" in records[-1], stream
        assert _listing(tmp_path) == before, f"{case.name} left {_listing(tmp_path) - before}"
    assert not [c for c in child_processes() if "ffmpeg" in c]


def test_one_bad_source_does_not_stop_the_others(tmp_path: Path) -> None:
    (tmp_path / "noise.mp4").write_bytes(NOISE)
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_of_size(16000, 16000))
    sources = [str(VIDEO), str(tmp_path / "noise.mp4"), str(bomb), "ftp://x/y.mp4", str(PHOTO)]
    result = CliRunner().invoke(main, ["score", *sources, "--json"])
    assert result.exit_code == 2
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["source"] for r in records] == sources
    assert ["error" in r for r in records] == [False, True, True, True, False]
    assert records[0]["score"] == pytest.approx(95.8555, abs=1e-3)


def _kvqe(*args: str, **kwargs: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([str(BIN / "kvqe"), *args], env=env, **kwargs)  # type: ignore[call-overload]


@needs_ffmpeg
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_enhance_video_leaves_nothing_behind(tmp_path: Path, signum: int, code: int) -> None:
    long = tmp_path / "long.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-stream_loop", "20", "-i", str(VIDEO), "-c:v", "libx264",
                    "-preset", "ultrafast", str(long)], check=True)
    made = tmp_path / "new"  # a folder the command makes for -o, removed with its temporary output
    # the signal's default action in the child, as in a terminal: a shell's background job (CI's runner may be
    # one) ignores SIGINT, and a Python started with it ignored keeps ignoring it
    process = _kvqe("enhance", str(long), "-o", str(made / "up.mp4"), stderr=subprocess.PIPE,
                    preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL))
    try:
        # wait for the event (its temporary output appearing), however long a loaded machine takes to get there
        while not (made.is_dir() and any(p.name.startswith(".up.") for p in made.iterdir())):
            assert process.poll() is None, f"enhance exited with {process.returncode} before writing"
            time.sleep(0.1)
        process.send_signal(signum)
        signalled = time.monotonic()
        _, stderr = process.communicate(timeout=SIGNAL_GRACE_S)
    finally:
        process.kill()  # never left running when the test fails
    # issue #34 asks for 2 s (a tile in progress no longer holds the signal up); printed, not asserted, as the
    # machine may be loaded
    print(f"enhance ended {time.monotonic() - signalled:.2f} s after signal {signum}")
    assert process.returncode == code, stderr
    assert b"Traceback" not in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]


def test_a_closed_stdout_ends_the_command_quietly(tmp_path: Path) -> None:
    sources = [str(PHOTO)] * 40
    process = _kvqe("score", *sources, "--json", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    process.stdout.readline()
    process.stdout.close()  # the reader goes away, as `| head -1` does
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 141
    assert stderr == b""


def test_in_plain_text_a_bad_source_is_reported_on_stderr(tmp_path: Path) -> None:
    (tmp_path / "noise.mp4").write_bytes(NOISE)
    for command in (["score"], ["gate", "--min-score", "50"]):
        result = CliRunner().invoke(main, [*command, str(PHOTO), str(tmp_path / "noise.mp4")])
        assert result.exit_code == 2, result.output
        assert result.stdout.splitlines()[0].startswith(str(PHOTO)) and "noise.mp4" not in result.stdout
        assert "noise.mp4: error:" in result.stderr
