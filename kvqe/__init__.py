"""kvqe: no-reference video quality scoring and super-resolution for edge deployment.

>>> import kvqe
>>> sr = kvqe.load("sr")                  # embedded Real-ESRGAN animevideov3 bundle
>>> big = sr.enhance(image_bgr_uint8)     # (4H)x(4W)x3 uint8 BGR
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from kvqe.errors import KvqeError
from kvqe.version import __version__

if TYPE_CHECKING:
    from kvqe.gating import GateResult
    from kvqe.sdk.model import Model


def load(name_or_path: str | os.PathLike[str], **options: Any) -> Model:
    """Load ``"vqa"``, ``"sr"`` or a bundle directory; see :func:`kvqe.sdk.loader.load` for the options.

    Imported lazily so that ``import kvqe`` stays light.
    """
    from kvqe.sdk.loader import load as load_bundle

    return load_bundle(name_or_path, **options)


def gate(source: str | os.PathLike[str], **options: Any) -> GateResult:
    """Pass, enhance or reject one source against a minimum score; see :func:`kvqe.gating.gate`.

    Imported lazily so that ``import kvqe`` stays light.
    """
    from kvqe.gating import gate as gate_source

    return gate_source(source, **options)


def scale(sources: list[str], bundle: str = "vqa", *, actors: int = 2, address: str | None = None,
          retries: int = 3, parquet: str | os.PathLike[str] | None = None, per_second: float | None = None,
          max_frames: int | None = None, **options: Any) -> list[dict[str, Any]]:
    """Score ``sources`` (files, folders, globs, URLs, ``.txt`` lists of them) on Ray, one actor of ``actors``
    per CPU each loading ``bundle`` once with ``options`` (backend, precision, threads); the records
    ``kvqe score --json`` prints, in the order of the sources, a failed source as ``{"source", "error", "exit_code"}``. Connects to ``address``
    or starts a local Ray; ``parquet``: also write one row per source there. Needs ``pip install 'kvqe[ray]'``.
    Not for several threads at once (one Ray connection per process)."""
    import functools
    from pathlib import Path

    from kvqe import scaleout
    from kvqe.bounds import MAX_FRAMES, PER_SECOND, checked_int, optional
    from kvqe.commands.score import expand_catalogue, parquet_columns, score_job
    from kvqe.sdk.limits import DEFAULT_MAX_PIXELS, DEFAULT_TIMEOUT_S
    from kvqe.sdk.loader import load as load_bundle

    optional(per_second, "per_second", PER_SECOND)
    if max_frames is not None:
        checked_int(max_frames, "max_frames", MAX_FRAMES)
    paths = expand_catalogue([str(source) for source in sources])
    limits = {"timeout": DEFAULT_TIMEOUT_S, "max_pixels": DEFAULT_MAX_PIXELS, "protocols": [], "demuxers": []}
    job = functools.partial(score_job, per_second=per_second, max_frames=max_frames, fps=None, limits=limits)
    finished = list(scaleout.run(paths, job, load=load_bundle, bundle=bundle, options=options, actors=actors,
                                 address=address, retries=retries))
    order = {path: index for index, path in enumerate(paths)}
    records = sorted(finished, key=lambda record: order.get(record["source"], len(order)))
    if parquet is not None:
        scaleout.write_parquet(Path(parquet), records, parquet_columns())
    return records


__all__ = ["KvqeError", "__version__", "gate", "load", "scale"]
