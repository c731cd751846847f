"""Decoding through the ``ffmpeg`` command, for streams the OpenCV build opens but cannot decode.

The FFmpeg inside the opencv-python 4.x wheels has no software AV1 decoder (checked with 4.12.0.88; 5.1.0
decodes AV1), so with them an AV1 upload opens (its container is read) and yields no frame. Where an
``ffmpeg`` executable is installed, as on any transcoding server, such a stream is decoded by it instead:
frames arrive as a PPM stream on a pipe (each frame carries its own size, so rotation and cropping need no
second probe). :class:`FfmpegProcess` also feeds the training teacher its raw luma planes.

Each frame's size is checked against a pixel cap from its header, before its pixels are read.
"""
from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from kvqe.errors import BadInputError

_STDERR_TAIL_LINES = 3
_PPM_FIELD_BYTES = 32  # a PPM header line is a few digits; anything longer is not ffmpeg's output
_DECODER_CAP = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")  # libavutil's refusal


class FrameTooLargeError(BadInputError):
    """A frame is larger than the pixel cap (refused from its header, before it is decoded)."""


def check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    """FrameTooLargeError if a ``width`` x ``height`` frame is over ``max_pixels`` (None: no cap)."""
    if max_pixels is not None and width * height > max_pixels:
        raise FrameTooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the cap of {max_pixels:,} pixels; "
            "refused before decoding; pass max_pixels= to raise the cap"
        )


def find_ffmpeg() -> str | None:
    """The ``ffmpeg`` executable on PATH, or None."""
    return shutil.which("ffmpeg")


def local_input(path: str | os.PathLike[str]) -> list[str]:
    """ffmpeg's input options for a local file, read as that file whatever its name holds ("concat:",
    "file:" ...), through the file protocol alone (a local playlist cannot reach out either)."""
    return ["-protocol_whitelist", "file", "-i", f"file:{Path(path).absolute()}"]


def find_ffprobe() -> str | None:
    """The ``ffprobe`` executable on PATH, or None."""
    return shutil.which("ffprobe")


@dataclass(frozen=True)
class MediaStream:
    """One stream of a media file as ffprobe reports it."""

    index: int
    kind: str  # ffprobe's codec_type: "video", "audio", "subtitle", "data", "attachment"
    codec: str  # ffprobe's codec_name, "" when it has none
    fields: Mapping[str, str] = field(default_factory=dict)  # every other field ffprobe gave, as text
    attached_pic: bool = False  # a cover picture stored as a video stream

    def rate(self) -> Fraction | None:
        """The frame rate as an exact fraction: ``r_frame_rate`` (the nominal rate, 30000/1001 stays
        30000/1001) when it is within 1% of ``avg_frame_rate``, else ``avg_frame_rate`` (a variable-rate
        video's mean, which keeps its duration); None when neither is known."""
        nominal, mean = _fraction(self.fields.get("r_frame_rate")), _fraction(self.fields.get("avg_frame_rate"))
        if nominal and mean and abs(nominal - mean) > mean / 100:
            return mean
        return nominal or mean

    def seconds(self, key: str) -> float | None:
        """A time field (e.g. ``start_time``) in seconds, None when absent."""
        try:
            return float(self.fields[key])
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class MediaInfo:
    """A media file's streams and the container's start time (seconds, 0 when unknown)."""

    streams: tuple[MediaStream, ...]
    start_time: float = 0.0

    @property
    def video(self) -> MediaStream | None:
        """The first video stream that is not a cover picture (the one the decoders read)."""
        return next((s for s in self.streams if s.kind == "video" and not s.attached_pic), None)


def _fraction(text: str | None) -> Fraction | None:
    """A positive ffprobe rational ("30000/1001"), else None (ffprobe writes "0/0" for unknown)."""
    try:
        value = Fraction(text) if text else None
    except (ValueError, ZeroDivisionError):
        return None
    return value if value and value > 0 else None


def probe(executable: str, path: str | os.PathLike[str], name: str, timeout: float | None = None) -> MediaInfo:
    """The streams of the local file ``path`` (read as that file, see :func:`local_input`) by ``ffprobe``;
    BadInputError naming ``name`` when ffprobe cannot read it or takes longer than ``timeout`` seconds."""
    command = [executable, "-v", "error", "-of", "json", "-show_streams", "-show_entries", "format=start_time",
               *local_input(path)]
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BadInputError(f"{name}: ffprobe did not read it within {timeout:g} s") from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()[-_STDERR_TAIL_LINES:]
        raise BadInputError(f"{name}: ffprobe cannot read it: {' | '.join(message) or 'no error message'}")
    report = json.loads(result.stdout or b"{}")
    streams = tuple(
        MediaStream(
            index=int(raw["index"]),
            kind=str(raw.get("codec_type", "")),
            codec=str(raw.get("codec_name", "")),
            fields={k: str(v) for k, v in raw.items() if not isinstance(v, (dict, list))},
            attached_pic=bool(raw.get("disposition", {}).get("attached_pic")),
        )
        for raw in report.get("streams", [])
    )
    start = report.get("format", {}).get("start_time")
    return MediaInfo(streams, float(start) if start is not None else 0.0)


def _read_ppm(stream: io.BufferedIOBase, name: str, max_pixels: int | None = None) -> np.ndarray | None:
    """The next binary PPM (P6, 8-bit) image of ``stream`` as HxWx3 BGR, or None at the end; its size is
    checked against ``max_pixels`` before its pixels are read."""
    magic = stream.readline(_PPM_FIELD_BYTES)
    if not magic:
        return None
    size, maxval = stream.readline(_PPM_FIELD_BYTES).split(), stream.readline(_PPM_FIELD_BYTES).strip()
    if magic.strip() != b"P6" or len(size) != 2 or not all(v.isdigit() for v in size) or maxval != b"255":
        raise BadInputError(f"{name}: ffmpeg wrote an unexpected frame header {magic + b' '.join(size)!r}")
    width, height = int(size[0]), int(size[1])
    check_pixels(name, width, height, max_pixels)
    image = np.empty((height, width, 3), np.uint8)
    view, filled = image.reshape(-1).data, 0
    while filled < image.nbytes and (count := stream.readinto(view[filled:])):
        filled += count
    if filled != image.nbytes:
        raise BadInputError(f"{name}: ffmpeg's output ended in the middle of a {width}x{height} frame")
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR, dst=image)


class FfmpegProcess:
    """An ``ffmpeg`` process writing its output (``args`` name the input, filters and format) to a pipe."""

    def __init__(self, executable: str, args: list[str], name: str) -> None:
        self.name = name
        # a file, not a pipe, so a chatty decoder cannot block on it; closed by close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._process = subprocess.Popen(
            [executable, "-nostdin", "-v", "error", *args, "-"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr,
        )

    @property
    def stdout(self) -> io.BufferedReader:
        """ffmpeg's output."""
        assert isinstance(self._process.stdout, io.BufferedReader)
        return self._process.stdout

    def readable_within(self, seconds: float) -> bool:
        """Whether ffmpeg writes something (or exits) within ``seconds``; call before the first read."""
        return bool(select.select([self.stdout], [], [], seconds)[0])

    def interrupt(self) -> None:
        """Kill ffmpeg if it still runs, from any thread: a reader blocked on its output then sees the end."""
        if self._process.poll() is None:
            self._process.kill()

    def finish(self, count: int) -> None:
        """Wait for ffmpeg after ``count`` frames were read; BadInputError if it failed or yielded none."""
        status = self._process.wait()
        if status != 0 or count == 0:
            raise BadInputError(
                f"{self.name}: ffmpeg decoded {count} frames and exited with status {status}: {self.errors()}"
            )

    def errors(self) -> str:
        """The last lines ffmpeg wrote to stderr, or a note that it wrote none."""
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-_STDERR_TAIL_LINES:]) or "no error message"

    def close(self) -> None:
        """Stop ffmpeg if it still runs and release its pipes."""
        self.interrupt()
        self._process.wait()
        self.stdout.close()
        self._stderr.close()


class FfmpegDecode(FfmpegProcess):
    """An ``ffmpeg`` process decoding the first video stream of its input to BGR frames.

    ``inputs``: the input options and ``-i`` argument (e.g. ``["-rw_timeout", "30000000", "-i", url]``);
    frames over ``max_pixels`` are refused from their header, and by the decoder itself (its ``max_pixels``
    option), so a stream that grows mid-way is refused before a large frame is allocated.
    """

    def __init__(self, executable: str, inputs: list[str], name: str, max_pixels: int | None = None) -> None:
        capped = [] if max_pixels is None else ["-max_pixels", str(max_pixels)]
        super().__init__(executable, [*capped, *inputs, "-map", "0:v:0", "-f", "image2pipe", "-c:v", "ppm",
                                      "-pix_fmt", "rgb24"], name)
        self.max_pixels = max_pixels

    def frames(self) -> Iterator[np.ndarray]:
        """The decoded frames, HxWx3 uint8 BGR; BadInputError if ffmpeg fails or yields none, FrameTooLargeError
        if its decoder refused a frame over the cap (skipped by ffmpeg, never a shorter video here)."""
        count = 0
        while (image := _read_ppm(self.stdout, self.name, self.max_pixels)) is not None:
            yield image
            count += 1
        self._check_refused(count)
        self.finish(count)

    def _check_refused(self, count: int) -> None:
        self._stderr.seek(0)
        refused = _DECODER_CAP.search(self._stderr.read().decode(errors="replace"))
        if refused is not None:
            width, height = int(refused.group(1)), int(refused.group(2))
            raise FrameTooLargeError(
                f"{self.name}: after {count} frames the stream changes to {width}x{height}, {width * height:,} "
                f"pixels, over the cap of {self.max_pixels:,} pixels; refused by the decoder before decoding; "
                "pass max_pixels= to raise the cap")
