"""Thumbnails of a video's lowest-scoring keyframes as base64 PNG data: URIs, decoded with kvqe's frame sources."""
from __future__ import annotations

import base64
from collections.abc import Sequence

import cv2
import numpy as np

from kvqe.errors import KvqeError
from kvqe.sdk.sources import open_source

THUMB_WIDTH = 200


def lowest(times: Sequence[float], scores: Sequence[float], count: int) -> list[tuple[float, float]]:
    """The ``count`` lowest (time, score) pairs, in time order."""
    ranked = sorted(zip(times, scores), key=lambda pair: pair[1])[:count]
    return sorted(ranked)


def thumbnails(source: str, wanted: Sequence[float]) -> list[str] | str:
    """One data: URI per time in ``wanted`` (the decoded frame nearest each time), or a note saying why there
    are none (a missing or unreadable video is not an error for a report). Decodes the video in order once."""
    best: dict[int, tuple[float, np.ndarray]] = {}
    try:
        with open_source(source) as frames:
            for frame in frames:
                for i, time_s in enumerate(wanted):
                    gap = abs(frame.time_s - time_s)
                    if i not in best or gap < best[i][0]:
                        best[i] = (gap, frame.image)
    except (KvqeError, OSError) as error:
        return f"no thumbnails: {error}"
    uris = []
    for i in range(len(wanted)):
        if i not in best:
            return "no thumbnails: the video has fewer frames than its scores"
        image = best[i][1]
        height, width = image.shape[:2]
        small = cv2.resize(image, (THUMB_WIDTH, max(1, round(height * THUMB_WIDTH / width))),
                           interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", small)
        if not ok:
            return "no thumbnails: PNG encoding failed"
        uris.append("data:image/png;base64," + base64.b64encode(png.tobytes()).decode("ascii"))
    return uris
