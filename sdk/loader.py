"""``kvqe.load()``: resolve a name or bundle path, pick the backend and precision, verify, build the Model."""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from kvqe.bounds import THREADS, checked_int
from kvqe.bundle import MODEL_STAGE, PRECISIONS, Artifact, Bundle, read_bundle
from kvqe.errors import BackendUnavailableError, BundleError
from kvqe.runtimes import Runner
from kvqe.runtimes.registry import AUTO_ORDER, create_runner, is_available
from kvqe.sdk.model import Model
from kvqe.sdk.pipelines import compose

# embedded default name -> bundle folder inside the kvqe package
EMBEDDED: dict[str, str] = {"sr": "sr", "vqa": "vqa"}


def embedded_bundle_path(name: str) -> Path:
    """Directory of an embedded default bundle (``"sr"``, ``"vqa"``)."""
    return Path(str(resources.files("kvqe") / "bundles" / EMBEDDED[name]))


def resolve_bundle(name_or_path: str | os.PathLike[str]) -> Bundle:
    """A bundle from an embedded default name or a directory path."""
    if isinstance(name_or_path, str) and name_or_path in EMBEDDED:
        return read_bundle(embedded_bundle_path(name_or_path))
    if not Path(name_or_path).is_dir():
        raise BundleError(
            f"no bundle directory at {name_or_path} (looked for {Path(name_or_path).absolute()}); a bundle is "
            f"a directory kvqe-export wrote, or an embedded name: {', '.join(sorted(EMBEDDED))}"
        )
    return read_bundle(name_or_path)


def configurations(bundle: Bundle) -> dict[tuple[str, str], dict[str, Artifact]]:
    """Every (backend, precision) the bundle can run, with the artifact each stage runs there.

    A single-graph bundle has one stage (``model``); a pipeline needs an artifact for every stage at the
    precision the manifest maps it to (see :meth:`Bundle.stage_precision`). Order: manifest order of
    backends, precisions fp32 first.
    """
    found: dict[tuple[str, str], dict[str, Artifact]] = {}
    backends = dict.fromkeys(a.backend for a in bundle.artifacts)
    for backend in backends:
        for precision in PRECISIONS:
            chosen = {stage: bundle.find(backend, bundle.stage_precision(precision, stage), stage)
                      for stage in bundle.stages}
            if all(chosen.values()) and any(a.precision == precision for a in chosen.values() if a):
                found[(backend, precision)] = {stage: a for stage, a in chosen.items() if a is not None}
    return found


def choose_artifacts(bundle: Bundle, backend: str, precision: str | None,
                     allow_undeployable: bool) -> tuple[str, str, dict[str, Artifact]]:
    """The (backend, precision) to run and one artifact per stage: the requested backend/precision, or for
    ``auto`` the fastest available backend that has every stage. Artifacts that failed their gates are
    refused unless ``allow_undeployable``."""
    candidates = {key: stages for key, stages in configurations(bundle).items()
                  if (precision is None or key[1] == precision) and (backend == "auto" or key[0] == backend)}
    listing = ", ".join(f"{a.backend}/{a.precision}" + ("" if a.stage == MODEL_STAGE else f" ({a.stage})")
                        for a in bundle.artifacts)
    if not candidates:
        wanted = f"{backend}/{precision or 'any precision'}"
        every = "" if bundle.pipeline is None else f" for every stage ({', '.join(bundle.stages)})"
        raise BundleError(f"{bundle.path} has no {wanted} artifact{every}; it has: {listing}")
    usable = {key: stages for key, stages in candidates.items()
              if allow_undeployable or all(a.deployable for a in stages.values())}
    if not usable:
        raise BundleError(
            f"{bundle.path}: the {backend}/{precision or 'any'} artifact failed its accuracy gates "
            "(deployable: false); pass allow_undeployable=True to run it anyway"
        )
    order = AUTO_ORDER if backend == "auto" else (backend,)
    for name in order:
        matching = sorted((key for key in usable if key[0] == name), key=lambda k: (k[1] != "fp32", k[1]))
        if matching and (backend != "auto" or is_available(name)):
            return matching[0][0], matching[0][1], usable[matching[0]]
    raise BackendUnavailableError(
        f"none of the backends with artifacts in {bundle.path} ({listing}) is available on this machine"
    )


def primary_artifact(stages: dict[str, Artifact], precision: str) -> Artifact:
    """The artifact that stands for a configuration: the last stage running at ``precision``."""
    return [a for a in stages.values() if a.precision == precision][-1]


def create_bundle_runner(bundle: Bundle, stages: dict[str, Artifact], *, threads: int = 0,
                         **runner_options: Any) -> Runner:
    """A (not yet loaded) runner of the chosen artifacts: the artifact's runner, or for a pipeline one runner
    per stage composed into one. Every file is read once and verified against its sha256, and the runners
    parse those bytes, so what was checked is what runs."""
    files = {stage: bundle.read_verified(artifact) for stage, artifact in stages.items()}
    runners = {stage: create_runner(artifact.backend, files[stage], threads=threads,
                                    **{**artifact.runtime_options, **runner_options})
               for stage, artifact in stages.items()}
    pipeline = bundle.pipeline
    if pipeline is None:
        return runners[MODEL_STAGE]
    return compose(pipeline, runners)


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

    ``backend``: ``auto`` (fastest installed backend with an artifact), ``onnxruntime``, ``openvino`` or
    ``tensorrt`` (``torch`` runs models only as the export's reference, never a bundle). ``precision``: ``fp32``, ``fp16``, ``int8``, or None for fp32 when present.
    Every artifact used is verified against its sha256 first. A pipeline bundle loads one artifact per
    stage on the same backend and runs them as one model (its kind: :mod:`kvqe.sdk.pipelines`).
    """
    threads = checked_int(threads, "threads", THREADS)
    bundle = resolve_bundle(name_or_path)
    _, chosen, stages = choose_artifacts(bundle, backend, precision, allow_undeployable)
    runner = create_bundle_runner(bundle, stages, threads=threads, **runner_options)
    return Model(bundle, primary_artifact(stages, chosen), runner, stages)
