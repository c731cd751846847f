"""Bundle format: a directory with ``manifest.json`` and artifact files beside it.

Reading verifies the sha256 of every artifact it hands out; a mismatch is an error, never a warning.
Writing is atomic (see :func:`kvqe.files.atomic_output_dir`).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvqe.errors import BundleError
from kvqe.files import sha256_file

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
TASKS = ("vqa", "sr")
BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")


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

    def find(self, backend: str, precision: str) -> Artifact | None:
        for artifact in self.artifacts:
            if artifact.backend == backend and artifact.precision == precision:
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
    return Bundle(root, manifest, artifacts)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (stable key order and formatting, so equal bundles are equal bytes)."""
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")
