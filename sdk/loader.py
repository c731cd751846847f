"""``kvqe.load()``: resolve a name or bundle path, pick the backend and precision, verify, build the Model."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from kvqe.bundle import Artifact, Bundle, read_bundle
from kvqe.errors import BackendUnavailableError, BundleError
from kvqe.runtimes.registry import AUTO_ORDER, create_runner, is_available
from kvqe.sdk.model import Model

# embedded default name -> bundle folder inside the kvqe package (None: not shipped yet, with the advice)
EMBEDDED: dict[str, str | None] = {"sr": "sr", "vqa": None}
_VQA_ADVICE = (
    "no default VQA bundle ships with this kvqe version yet; export one from a checkpoint with "
    "`kvqe-export vqa-sharpmind-swint --weights model=CKPT --out BUNDLE --formats onnx` "
    "and load it with kvqe.load('BUNDLE')"
)


def embedded_bundle_path(name: str) -> Path:
    """Directory of an embedded default bundle (``"sr"``, ``"vqa"``)."""
    folder = EMBEDDED[name]
    if folder is None:
        raise BundleError(_VQA_ADVICE)
    return Path(str(resources.files("kvqe") / "bundles" / folder))


def resolve_bundle(name_or_path: str | os.PathLike[str]) -> Bundle:
    """A bundle from an embedded default name or a directory path."""
    if isinstance(name_or_path, str) and name_or_path in EMBEDDED:
        return read_bundle(embedded_bundle_path(name_or_path))
    return read_bundle(name_or_path)


def choose_artifact(bundle: Bundle, backend: str, precision: str | None, allow_undeployable: bool) -> Artifact:
    """The artifact to run: the requested backend/precision, or for ``auto`` the fastest available one."""
    candidates = [
        a for a in bundle.artifacts
        if (precision is None or a.precision == precision) and (backend == "auto" or a.backend == backend)
    ]
    listing = ", ".join(f"{a.backend}/{a.precision}" for a in bundle.artifacts)
    if not candidates:
        wanted = f"{backend}/{precision or 'any precision'}"
        raise BundleError(f"{bundle.path} has no {wanted} artifact; it has: {listing}")
    usable = [a for a in candidates if a.deployable or allow_undeployable]
    if not usable:
        raise BundleError(
            f"{bundle.path}: the {backend}/{precision or 'any'} artifact failed its accuracy gates "
            "(deployable: false); pass allow_undeployable=True to run it anyway"
        )
    order = AUTO_ORDER if backend == "auto" else (backend,)
    for name in order:
        matching = [a for a in usable if a.backend == name]
        if matching and (backend != "auto" or is_available(name)):
            matching.sort(key=lambda a: (a.precision != "fp32", a.precision))
            return matching[0]
    raise BackendUnavailableError(
        f"none of the backends with artifacts in {bundle.path} ({listing}) is available on this machine"
    )


def load(
    name_or_path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    precision: str | None = None,
    threads: int = 0,
    allow_undeployable: bool = False,
    **runner_options: Any,
) -> Model:
    """Load an embedded default (``"vqa"``, ``"sr"``) or a bundle directory on a backend.

    ``backend``: ``auto`` (fastest installed backend with an artifact), ``onnxruntime``, ``openvino``,
    ``tensorrt`` or ``torch``. ``precision``: ``fp32``, ``fp16``, ``int8``, or None for fp32 when present.
    Every artifact used is verified against its sha256 first.
    """
    bundle = resolve_bundle(name_or_path)
    artifact = choose_artifact(bundle, backend, precision, allow_undeployable)
    path = bundle.verified_path(artifact)
    options = {**artifact.runtime_options, **runner_options}
    runner = create_runner(artifact.backend, path, threads=threads, **options)
    return Model(bundle, artifact, runner)
