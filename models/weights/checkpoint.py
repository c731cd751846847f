"""Reading PyTorch checkpoints safely (``weights_only``) and loading them strictly."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kvqe.errors import BadInputError
from kvqe.files import sha256_file


def read_state_dict(
    path: Path, wrapper_keys: Sequence[str] = ("params_ema", "params", "state_dict", "model")
) -> dict[str, torch.Tensor]:
    """Read a checkpoint and unwrap it to a flat ``state_dict``.

    The first of ``wrapper_keys`` present is taken (BasicSR's rule: ``params_ema``, else ``params``);
    a leading ``module.`` (DataParallel) is stripped from every key. Only tensors are accepted:
    the file is read with ``weights_only=True`` so no pickled code runs.
    """
    if not path.is_file():
        raise BadInputError(f"checkpoint not found: {path}")
    try:
        obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or non-checkpoint files
        raise BadInputError(f"{path} is not a readable PyTorch checkpoint: {exc}") from exc
    if isinstance(obj, dict):
        for key in wrapper_keys:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInputError(f"{path} does not hold a state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """``load_state_dict(strict=True)`` with a plain error listing missing/unexpected/mis-shaped keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if items:
                parts.append(f"{len(items)} {label} (e.g. {', '.join(items[:3])})")
        raise BadInputError(f"{source} does not match {type(module).__name__}: " + "; ".join(parts))
    module.load_state_dict(state, strict=True)


def checkpoint_provenance(part: str, path: Path) -> dict[str, Any]:
    """Manifest record of one weight file."""
    return {part: {"name": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}}
