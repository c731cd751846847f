"""Bundle format: a directory with ``manifest.json`` and artifact files beside it.

Reading verifies the sha256 of every artifact it hands out; a mismatch is an error, never a warning.
Writing is atomic (see :func:`kvqe.files.atomic_output_dir`).

A bundle runs one graph (every artifact is stage ``"model"``) or a staged pipeline: the manifest then
carries ``"pipeline": {"kind", "stages": [names in run order], ...}`` (the constants and the glue between
the stages, see :mod:`kvqe.sdk.pipeline`), each artifact entry names its ``"stage"``, and the runtime runs
one artifact per stage. Schema version 1 stays readable both ways: an entry without ``"stage"`` is
``"model"``, and a manifest without ``"pipeline"`` is one graph.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvqe.errors import BundleError
import hashlib

from kvqe.files import ModelFiles, sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TASKS = ("vqa", "sr")
BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_STAGE = "model"  # the stage of every artifact of a single-graph bundle


@dataclass(frozen=True)
class Artifact:
    """One runnable file of a bundle, as its manifest entry describes it."""

    backend: str
    precision: str
    file: str
    sha256: str
    bytes: int
    deployable: bool
    record: dict[str, Any] = field(repr=False)
    extra_files: tuple[tuple[str, str, int], ...] = ()  # (file, sha256, bytes), e.g. an OpenVINO .bin
    stage: str = MODEL_STAGE  # the pipeline stage this graph runs (``"model"``: a single-graph bundle)

    @property
    def runtime_options(self) -> dict[str, Any]:
        """Runner options the exporter recorded (e.g. OpenVINO's inference precision)."""
        return dict(self.record.get("runtime", {}))

    @classmethod
    def from_json(cls, entry: dict[str, Any], where: str) -> Artifact:
        try:
            artifact = cls(
                backend=str(entry["backend"]),
                precision=str(entry["precision"]),
                file=str(entry["file"]),
                sha256=str(entry["sha256"]),
                bytes=int(entry["bytes"]),
                deployable=bool(entry["deployable"]),
                record=entry,
                extra_files=tuple((str(e["file"]), str(e["sha256"]), int(e["bytes"]))
                                  for e in entry.get("extra_files", [])),
                stage=str(entry.get("stage", MODEL_STAGE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{where}: an artifact entry lacks or mangles {exc}") from None
        if artifact.backend not in BACKENDS or artifact.precision not in PRECISIONS:
            raise BundleError(f"{where}: unknown backend/precision {artifact.backend}/{artifact.precision}")
        for name in (artifact.file, *(extra[0] for extra in artifact.extra_files)):
            if Path(name).name != name:
                raise BundleError(f"{where}: artifact file {name!r} must be a plain name in the bundle")
        return artifact


@dataclass(frozen=True)
class Bundle:
    """A loaded manifest and the directory it lives in."""

    path: Path
    manifest: dict[str, Any]
    artifacts: tuple[Artifact, ...]

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def model_name(self) -> str:
        return str(self.manifest["model"]["name"])

    @property
    def input_spec(self) -> dict[str, Any]:
        return dict(self.manifest["input"])

    @property
    def output_spec(self) -> dict[str, Any]:
        return dict(self.manifest["output"])

    @property
    def pipeline(self) -> dict[str, Any] | None:
        """The manifest's ``pipeline`` entry (kind, stages, glue constants), or None for one graph."""
        entry = self.manifest.get("pipeline")
        return dict(entry) if entry is not None else None

    @property
    def stages(self) -> tuple[str, ...]:
        """Stage names in run order: the pipeline's, or ``("model",)`` for a single-graph bundle."""
        pipeline = self.pipeline
        return tuple(pipeline["stages"]) if pipeline is not None else (MODEL_STAGE,)

    def stage_precision(self, precision: str, stage: str) -> str:
        """The artifact precision ``stage`` runs at when the bundle runs at ``precision``: the same, unless
        the pipeline maps it (e.g. INT8 for the denoiser only: ``"precisions": {"int8": {"encoder": "fp32"}}``)."""
        mapping = (self.pipeline or {}).get("precisions", {}).get(precision, {})
        return str(mapping.get(stage, precision))

    def find(self, backend: str, precision: str, stage: str = MODEL_STAGE) -> Artifact | None:
        """The artifact of ``stage`` with this backend and precision, if the bundle has one."""
        for artifact in self.artifacts:
            if artifact.backend == backend and artifact.precision == precision and artifact.stage == stage:
                return artifact
        return None

    def verified_file(self, name: str, sha256: str, size: int) -> Path:
        """Path of a bundle file after checking its size and sha256 against the manifest."""
        path = self.path / name
        if not path.is_file():
            raise BundleError(f"{path}: artifact file is missing from the bundle")
        actual = sha256_file(path)
        if actual != sha256 or path.stat().st_size != size:
            raise BundleError(
                f"{path}: sha256 mismatch (manifest {sha256[:12]}…, file {actual[:12]}…); "
                "the artifact was modified or corrupted: re-export the bundle"
            )
        return path

    def read_verified_file(self, name: str, sha256: str, size: int) -> bytes:
        """The bytes of a bundle file, read once and checked against the manifest's size and sha256, so
        what a parser gets is what was verified (no window between the check and the read)."""
        path = self.path / name
        if not path.is_file():
            raise BundleError(f"{path}: artifact file is missing from the bundle")
        if path.stat().st_size != size:
            raise BundleError(f"{path}: {path.stat().st_size} bytes, the manifest says {size}; "
                              "the artifact was modified or corrupted: re-export the bundle")
        with open(path, "rb") as handle:
            data = handle.read(size + 1)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256 or len(data) != size:
            raise BundleError(
                f"{path}: sha256 mismatch (manifest {sha256[:12]}…, file {actual[:12]}…); "
                "the artifact was modified or corrupted: re-export the bundle"
            )
        return data

    def read_verified(self, artifact: Artifact) -> ModelFiles:
        """``artifact``'s main file and every companion file, verified, in memory."""
        companions = {name: self.read_verified_file(name, sha256, size)
                      for name, sha256, size in artifact.extra_files}
        return ModelFiles(artifact.file, self.read_verified_file(artifact.file, artifact.sha256, artifact.bytes),
                          companions)

    def verified_path(self, artifact: Artifact) -> Path:
        """Path of ``artifact``'s main file after verifying it and every companion file."""
        for name, sha256, size in artifact.extra_files:
            self.verified_file(name, sha256, size)
        return self.verified_file(artifact.file, artifact.sha256, artifact.bytes)

    def verify_all(self) -> dict[str, str | None]:
        """Verify every artifact; maps file name to None (ok) or the error message."""
        results: dict[str, str | None] = {}
        for artifact in self.artifacts:
            try:
                self.verified_path(artifact)
                results[artifact.file] = None
            except BundleError as exc:
                results[artifact.file] = str(exc)
        return results


def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read and structurally check a bundle directory (hashes are checked when artifacts are used)."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"no bundle directory at {root}")
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a kvqe bundle: {MANIFEST} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} must hold a JSON object")
    for key in ("schema_version", "model", "task", "input", "output", "artifacts"):
        if key not in manifest:
            raise BundleError(f"{manifest_path} lacks the field {key!r}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"{manifest_path}: schema_version {manifest['schema_version']} is not supported "
            f"(this kvqe reads {SCHEMA_VERSION}); upgrade kvqe or re-export the bundle"
        )
    if manifest["task"] not in TASKS:
        raise BundleError(f"{manifest_path}: unknown task {manifest['task']!r}")
    artifacts = tuple(Artifact.from_json(e, str(manifest_path)) for e in manifest["artifacts"])
    if not artifacts:
        raise BundleError(f"{manifest_path} lists no artifacts")
    _check_stages(manifest, artifacts, manifest_path)
    return Bundle(root, manifest, artifacts)


def _check_stages(manifest: dict[str, Any], artifacts: tuple[Artifact, ...], where: Path) -> None:
    """Every artifact belongs to a declared stage, and every declared stage has an artifact."""
    pipeline = manifest.get("pipeline")
    if pipeline is None:
        stages: list[str] = [MODEL_STAGE]
    elif (not isinstance(pipeline, dict) or not isinstance(pipeline.get("kind"), str)
          or not isinstance(pipeline.get("stages"), list) or not pipeline["stages"]
          or not all(isinstance(s, str) for s in pipeline["stages"])):
        raise BundleError(f"{where}: 'pipeline' must be an object with a 'kind' and a non-empty list of 'stages'")
    else:
        stages = pipeline["stages"]
    strays = sorted({a.stage for a in artifacts} - set(stages))
    if strays:
        raise BundleError(f"{where}: artifacts of undeclared stage(s) {', '.join(strays)} "
                          f"(declared: {', '.join(stages)})")
    empty = [s for s in stages if not any(a.stage == s for a in artifacts)]
    if empty:
        raise BundleError(f"{where}: stage(s) {', '.join(empty)} have no artifact")


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (stable key order and formatting, so equal bundles are equal bytes)."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")
