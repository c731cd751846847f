"""What the frame-source tests share: OpenCV's own decode of a file, and a wait for decoder threads to end."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np


def cv2_frames(path: Path) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    while (read := capture.read())[0]:
        yield read[1]
    capture.release()


def decoder_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kvqe-decoder") and t.is_alive()]


def wait_no_decoder(timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while decoder_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return not decoder_threads()
