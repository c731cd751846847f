"""Decoding through the ``ffmpeg`` command, for streams the OpenCV build opens but cannot decode.

The FFmpeg inside the opencv-python 4.x wheels has no software AV1 decoder (checked with 4.12.0.88; 5.1.0
decodes AV1), so with them an AV1 upload opens (its container is read) and yields no frame. Where an
``ffmpeg`` executable is installed, as on any transcoding server, such a stream is decoded by it instead:
frames arrive as a PPM stream on a pipe (each frame carries its own size, so rotation and cropping need no
second probe). :class:`FfmpegProcess` also feeds the training teacher its raw luma planes.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO

import cv2
import numpy as np

from kvqe.errors import BadInputError

_STDERR_TAIL_LINES = 3


def find_ffmpeg() -> str | None:
    """The ``ffmpeg`` executable on PATH, or None."""
    return shutil.which("ffmpeg")


def _read_ppm(stream: IO[bytes], name: str) -> np.ndarray | None:
    """The next binary PPM (P6, 8-bit) image of ``stream`` as HxWx3 BGR, or None at the end."""
    magic = stream.readline()
    if not magic:
        return None
    size, maxval = stream.readline().split(), stream.readline().strip()
    if magic.strip() != b"P6" or len(size) != 2 or maxval != b"255":
        raise BadInputError(f"{name}: ffmpeg wrote an unexpected frame header {magic + b' '.join(size)!r}")
    width, height = int(size[0]), int(size[1])
    data = stream.read(width * height * 3)
    if len(data) != width * height * 3:
        raise BadInputError(f"{name}: ffmpeg's output ended in the middle of a {width}x{height} frame")
    return cv2.cvtColor(np.frombuffer(data, np.uint8).reshape(height, width, 3), cv2.COLOR_RGB2BGR)


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
    def stdout(self) -> IO[bytes]:
        """ffmpeg's output."""
        assert self._process.stdout is not None
        return self._process.stdout

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
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self.stdout.close()
        self._stderr.close()


class FfmpegDecode(FfmpegProcess):
    """An ``ffmpeg`` process decoding the first video stream of ``target`` (a path or URL) to BGR frames."""

    def __init__(self, executable: str, target: str, name: str) -> None:
        super().__init__(executable, ["-i", target, "-map", "0:v:0", "-f", "image2pipe", "-c:v", "ppm",
                                      "-pix_fmt", "rgb24"], name)

    def frames(self) -> Iterator[np.ndarray]:
        """The decoded frames, HxWx3 uint8 BGR; BadInputError if ffmpeg fails or yields none."""
        count = 0
        while (image := _read_ppm(self.stdout, self.name)) is not None:
            yield image
            count += 1
        self.finish(count)
