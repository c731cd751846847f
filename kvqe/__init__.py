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


__all__ = ["KvqeError", "__version__", "gate", "load"]
