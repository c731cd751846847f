"""What the ``kvqe`` commands share: their common options, the source limits they pass to the API, and the
check that a bundle does the task a command needs."""
from __future__ import annotations

from typing import Any

import click

from kvqe import bounds
from kvqe.bundle import PRECISIONS
from kvqe.errors import BadInputError
from kvqe.runtimes.registry import AUTO_ORDER
from kvqe.sdk.demuxers import demuxer_names
from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
from kvqe.sdk.model import Model

# what kvqe.load(backend=...) runs: auto, or one of the runtimes auto chooses from (a backend the registry
# knows but cannot run bundles on, such as torch, is not offered)
BACKENDS = ("auto", *AUTO_ORDER)

backend_option = click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                              help="Runtime to run the bundle on (auto: the fastest installed).")
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                                help="Artifact precision (default: fp32 when the bundle has it).")
json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line on stdout.")
threads_option = click.option("--threads", type=int, default=0, show_default=True,
                              help="Inference threads per call (0: the backend's default, every core).")
timeout_option = click.option("--timeout", type=float, default=DEFAULT_TIMEOUT_S, show_default=True,
                              metavar="SECONDS", help="Longest wait for a source to open and for each frame (0: none).")
max_pixels_option = click.option("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                                 show_default=True,
                                 help="Largest frame (width x height), checked before decoding (0: none).")
protocols_option = click.option("--protocols", default="", metavar="LIST",
                                help="URL schemes to read beyond the network ones, e.g. file,concat (comma-separated).")
demuxers_option = click.option("--demuxers", default="", metavar="LIST",
                               help="Container formats to open beyond single media files, e.g. hls,dash "
                                    "(comma-separated FFmpeg demuxer names; playlists read the files they list).")
undeployable_option = click.option("--allow-undeployable", is_flag=True,
                                   help="Run an artifact that failed its accuracy gates (deployable: false).")


# the range of each numeric option (:mod:`kvqe.bounds`, as the API checks it); --timeout and --max-pixels
# take 0 for "no limit" besides
_BOUNDS = {"threads": bounds.THREADS, "timeout": bounds.TIMEOUT, "max_pixels": bounds.MAX_PIXELS,
           "per_second": bounds.PER_SECOND, "max_frames": bounds.MAX_FRAMES, "fps": bounds.FPS,
           "tile": bounds.TILE, "min_score": bounds.THRESHOLD, "segment_seconds": bounds.SECONDS,
           "duration": bounds.SECONDS}
_ZERO_IS_NONE = ("timeout", "max_pixels")


def check_numbers(**options: float | None) -> None:
    """BadInputError naming the first ``--option`` given a value out of its range (None: not given)."""
    for key, value in options.items():
        if value is not None and not (key in _ZERO_IS_NONE and value == 0):
            bounds.checked(value, f"--{key.replace('_', '-')}", _BOUNDS[key])


def source_limits(timeout: float, max_pixels: int, protocols: str = "", demuxers: str = "") -> dict[str, Any]:
    """The API's source limits from the CLI's options (0: no limit); BadInputError for a bad demuxer name."""
    return {"timeout": timeout or None, "max_pixels": max_pixels or None,
            "protocols": [p for p in protocols.split(",") if p.strip()],
            "demuxers": sorted(demuxer_names(demuxers))}


def require_task(model: Model, task: str, command: str) -> None:
    """BadInputError unless ``model`` does ``task`` (``command`` names what needs it)."""
    if model.task != task:
        raise BadInputError(f"{command} needs a {task} bundle, but {model.name!r} is a {model.task} bundle "
                            f"(give --bundle {task}, the embedded one, or a {task} bundle's directory)")
