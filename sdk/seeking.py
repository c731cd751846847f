"""Reading chosen frames of a local video file by seeking OpenCV's capture, exactly where a sequential decode
would have delivered them, and falling back to that decode when a seek cannot be trusted."""
from __future__ import annotations

from collections.abc import Iterator

import cv2

from kvqe.errors import BadInputError
from kvqe.sdk.capture import capture_frames, open_capture, read_frame
from kvqe.sdk.frame_source import least_frames
from kvqe.sdk.frames import Frame
from kvqe.sdk.limits import Limits
from kvqe.sdk.targets import Target

# a frame further ahead than this is reached by seeking (a seek decodes from the key picture before it,
# typically 1-10 s back), a nearer one by decoding forward
SEEK_GAP_S = 2.0


class CaptureSeeker:
    """Reads chosen frames of a local file by seeking OpenCV's capture (see :meth:`FrameSource.read_only`).

    OpenCV's FFmpeg backend seeks to a frame number by time (``index / fps``) and decodes forward from the
    key picture before it, so with a constant frame rate the frame it lands on is the one a sequential
    decode gives at that index; the frame's own timestamp confirms it, and a seek that lands elsewhere
    (variable frame rate, broken timestamps) or fails hands over to a sequential decode.
    """

    def __init__(self, capture: cv2.VideoCapture, target: Target, limits: Limits, first: Frame,
                 fps: float, frame_count: int) -> None:
        self.capture = capture
        self.fell_back = False
        self._target, self._limits, self._first = target, limits, first
        self._fps, self._frame_count = fps, frame_count

    def release(self) -> None:
        """Release the capture it reads (the source's release)."""
        self.capture.release()

    def frames(self, indices: list[int]) -> Iterator[Frame]:
        """The frames at ``indices``; then the file's length checked at its last frame that must exist."""
        gap = SEEK_GAP_S * self._fps
        position = 1  # frame 0 was read when the file was opened
        if indices and indices[0] == 0:
            yield self._first
        probe = least_frames(self._frame_count) - 1
        for index in [i for i in indices if i > 0] + ([probe] if probe > max(indices, default=0) else []):
            frame = self._seek(index) if index - position > gap else self._forward(position, index)
            if frame is None:
                yield from self._sequential(position)
                return
            if index != probe:
                yield frame
            position = index + 1

    def _forward(self, position: int, index: int) -> Frame | None:
        """Frame ``index`` decoded forward from ``position``, or None if the file ends first."""
        for _ in range(index - position):
            if not self.capture.grab():
                return None
        return read_frame(self.capture, self._target.name, index, self._fps)

    def _seek(self, index: int) -> Frame | None:
        """Frame ``index`` by seeking, or None if the seek fails or lands on another frame."""
        try:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        except cv2.error:
            return None
        frame = read_frame(self.capture, self._target.name, index, self._fps)
        milliseconds = self.capture.get(cv2.CAP_PROP_POS_MSEC)
        if frame is None or not abs(milliseconds / 1000 - index / self._fps) <= 0.5 / self._fps:
            return None
        return frame

    def _sequential(self, position: int) -> Iterator[Frame]:
        """Every frame from ``position`` on, decoded in order by a fresh capture; the file's length checked."""
        self.fell_back = True
        self.capture.release()
        self.capture = open_capture(self._target, self._limits)
        for _ in range(position):
            if not self.capture.grab():
                break
        decoded = position
        for frame in capture_frames(self.capture, self._target.name, self._fps, start=position):
            yield frame
            decoded += 1
        if decoded < least_frames(self._frame_count):
            raise BadInputError(
                f"{self._target.name}: the decode stopped after {decoded} of the {self._frame_count} frames its "
                "container declares (the file is truncated or its stream is damaged); check it with ffprobe"
            )
