"""Bundle format: a directory with ``manifest.json`` and artifact files beside it.

The manifest is read and validated as a whole by :mod:`kvqe.manifest` (schema, then what a schema cannot
say; a malformed manifest is a :class:`BundleError` naming the field's JSON path); its names
(:func:`parse_manifest`, :func:`check_manifest`, :func:`write_manifest`, the constants) are importable
from here too.

Integrity: every file a runtime opens is listed in the manifest with its sha256 and size, and is checked
before any parser sees it. :meth:`Bundle.read_verified` hands out the checked bytes themselves (an
artifact's main file and its companions: an OpenVINO IR's ``.bin``, a TensorRT engine's build record,
ONNX external data), so nothing can change between the check and the parse. A format's companion that the
manifest does not list is an error, not a file read unchecked. A mismatch is an error, never a warning.
Writing is atomic (see :func:`kvqe.files.atomic_output_dir`).

A bundle runs one graph (every artifact is stage ``"model"``) or a staged pipeline: the manifest then
carries ``"pipeline": {"kind", "stages": [names in run order], ...}`` (the constants and the glue between
the stages, see :mod:`kvqe.sdk.pipelines`), each artifact entry names its ``"stage"``, and the runtime runs
one artifact per stage. Schema version 1 stays readable both ways: an entry without ``"stage"`` is
``"model"``, and a manifest without ``"pipeline"`` is one graph.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, NamedTuple

from kvqe.errors import BundleError
from kvqe.files import ModelFiles, sha256_file
from kvqe.manifest import (
    BACKENDS,
    MANIFEST,
    MAX_DEPTH,
    MODEL_STAGE,
    PRECISIONS,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    TASKS,
    check_manifest,
    manifest_schema,
    parse_manifest,
    write_manifest,
)
from kvqe.onnx_data import onnx_external_data
from kvqe.specs import InputSpec, OutputSpec

__all__ = [
    "BACKENDS", "MANIFEST", "MAX_DEPTH", "MODEL_STAGE", "PRECISIONS", "SCHEMA_FILE", "SCHEMA_VERSION", "TASKS",
    "Artifact", "Bundle", "FileEntry", "check_manifest", "manifest_schema", "onnx_external_data",
    "parse_manifest", "read_bundle", "required_companions", "write_manifest",
]

_REEXPORT = "re-export the bundle"


class FileEntry(NamedTuple):
    """A bundle file as the manifest records it."""

    file: str
    sha256: str
    bytes: int

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> FileEntry:
        return cls(entry["file"], entry["sha256"], entry["bytes"])


def required_companions(file: str) -> dict[str, str]:
    """Files a format always reads beside its main file (name -> what it is): an OpenVINO IR's weights,
    a TensorRT engine's build record (the fingerprint the runner checks)."""
    path = PurePath(file)
    if path.suffix == ".xml":
        return {path.with_suffix(".bin").name: "weights"}
    if path.suffix == ".engine":
        return {path.with_suffix(".json").name: "build record"}
    return {}


@dataclass(frozen=True)
class Artifact:
    """One runnable file of a bundle, as its (validated) manifest entry describes it."""

    backend: str
    precision: str
    file: str
    sha256: str
    bytes: int
    deployable: bool
    record: dict[str, Any] = field(repr=False)
    extra_files: tuple[FileEntry, ...] = ()  # companions, e.g. an OpenVINO .bin, ONNX external data
    stage: str = MODEL_STAGE  # the pipeline stage this graph runs (``"model"``: a single-graph bundle)

    @property
    def runtime_options(self) -> dict[str, Any]:
        """Runner options the exporter recorded (e.g. OpenVINO's inference precision)."""
        return dict(self.record.get("runtime", {}))

    @property
    def entry(self) -> FileEntry:
        """The main file."""
        return FileEntry(self.file, self.sha256, self.bytes)

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> Artifact:
        """The artifact of a manifest entry that passed :func:`check_manifest`."""
        return cls(backend=entry["backend"], precision=entry["precision"], file=entry["file"],
                   sha256=entry["sha256"], bytes=entry["bytes"], deployable=entry["deployable"], record=entry,
                   extra_files=tuple(FileEntry.from_json(e) for e in entry.get("extra_files", [])),
                   stage=entry.get("stage", MODEL_STAGE))


@dataclass(frozen=True)
class Bundle:
    """A loaded manifest and the directory it lives in: immutable once read, free to share between threads."""

    path: Path
    manifest: dict[str, Any]
    artifacts: tuple[Artifact, ...]

    @property
    def task(self) -> str:
        return str(self.manifest["task"])

    @property
    def model_name(self) -> str:
        return str(self.manifest["model"]["name"])

    @functools.cached_property
    def input_spec(self) -> InputSpec:
        return InputSpec.from_json(self.manifest["input"])

    @functools.cached_property
    def output_spec(self) -> OutputSpec:
        return OutputSpec.from_json(self.manifest["output"])

    @property
    def validation(self) -> FileEntry | None:
        """The stored validation set (``kvqe verify``'s default data), if the bundle has one."""
        entry = self.manifest.get("validation")
        return FileEntry.from_json(entry) if entry is not None else None

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

    def check_file(self, entry: FileEntry) -> None:
        """Check a bundle file's size and sha256 against the manifest, reading it in chunks (for files
        nothing parses afterwards; a parser gets :meth:`read_verified_file`'s bytes instead)."""
        path = self._existing(entry.file)
        try:
            size = path.stat().st_size
            actual = sha256_file(path) if size == entry.bytes else ""
        except OSError as exc:
            raise BundleError(f"{path}: cannot be read ({exc.strerror}); {_REEXPORT}") from None
        if size != entry.bytes:
            raise BundleError(_size_message(path, size, entry.bytes))
        if actual != entry.sha256:
            raise BundleError(_hash_message(path, entry.sha256, actual))

    def read_verified_file(self, name: str, sha256: str, size: int) -> bytes:
        """The bytes of a bundle file, read once and checked against the manifest's size and sha256, so
        what a parser gets is what was verified (no window between the check and the read)."""
        path = self._existing(name)
        try:
            with open(path, "rb") as handle:
                on_disk = os.fstat(handle.fileno()).st_size
                if on_disk != size:  # before reading: the size read is the file's, never the manifest's claim
                    raise BundleError(_size_message(path, on_disk, size))
                data = handle.read(size + 1)
        except OSError as exc:
            raise BundleError(f"{path}: cannot be read ({exc.strerror}); {_REEXPORT}") from None
        if len(data) != size:  # it changed while being read
            raise BundleError(_size_message(path, len(data), size))
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise BundleError(_hash_message(path, sha256, actual))
        return data

    def read_verified(self, artifact: Artifact) -> ModelFiles:
        """``artifact``'s main file and every companion file, verified, in memory. A companion its format
        needs (IR weights, engine build record, ONNX external data) that the manifest does not list is a
        BundleError naming it: a runtime never reads a file that was not checked."""
        unlisted = self._unlisted_companions(artifact)
        if unlisted:
            raise BundleError(next(iter(unlisted.values())))
        companions = {e.file: self.read_verified_file(*e) for e in artifact.extra_files}
        main = self.read_verified_file(*artifact.entry)
        unlisted = self._unlisted_external_data(artifact, main)
        if unlisted:
            raise BundleError(next(iter(unlisted.values())))
        return ModelFiles(artifact.file, main, companions)

    def verify_all(self) -> dict[str, str | None]:
        """Check every file the manifest lists (each artifact's main file and companions, the validation
        data) and that every companion a format needs is listed. Maps each file name to None (ok) or the
        message saying what is wrong with it."""
        results: dict[str, str | None] = {}
        for artifact in self.artifacts:
            results.update(self._unlisted_companions(artifact))
            for entry in artifact.extra_files:
                if entry.file not in results:
                    results[entry.file] = self._file_problem(entry)
            try:  # the main file is parsed (ONNX external data): read once, from the verified bytes
                main = self.read_verified_file(*artifact.entry)
                results.update(self._unlisted_external_data(artifact, main))
                results[artifact.file] = None
            except BundleError as exc:
                results[artifact.file] = str(exc)
        validation = self.validation
        if validation is not None and validation.file not in results:
            results[validation.file] = self._file_problem(validation)
        return results

    def _file_problem(self, entry: FileEntry) -> str | None:
        """None if ``entry`` checks out (:meth:`check_file`), else what is wrong with it."""
        try:
            self.check_file(entry)
        except BundleError as exc:
            return str(exc)
        return None

    def _existing(self, name: str) -> Path:
        path = self.path / name
        try:
            found = path.is_file()
        except OSError as exc:
            raise BundleError(f"{path}: cannot be read ({exc.strerror}); {_REEXPORT}") from None
        if not found:
            raise BundleError(f"{path}: file is missing from the bundle; {_REEXPORT}")
        return path

    def _unlisted_companions(self, artifact: Artifact) -> dict[str, str]:
        """The companions ``artifact``'s format always reads that its entry does not list -> message."""
        listed = {e.file for e in artifact.extra_files}
        return {name: _unlisted_message(self.path / artifact.file, kind, name)
                for name, kind in required_companions(artifact.file).items() if name not in listed}

    def _unlisted_external_data(self, artifact: Artifact, main: bytes) -> dict[str, str]:
        """The external data files an ONNX main file names that its entry does not list -> message."""
        if PurePath(artifact.file).suffix != ".onnx":
            return {}
        listed = {e.file for e in artifact.extra_files}
        return {name: _unlisted_message(self.path / artifact.file, "external data", name)
                for name in onnx_external_data(main, self.path / artifact.file) if name not in listed}


def _size_message(path: Path, actual: int, expected: int) -> str:
    return (f"{path}: {actual} bytes, the manifest says {expected}; the file was modified, truncated or "
            f"replaced: {_REEXPORT}")


def _hash_message(path: Path, expected: str, actual: str) -> str:
    return (f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…); the file was "
            f"modified or replaced: {_REEXPORT}")


def _unlisted_message(main: Path, kind: str, name: str) -> str:
    return (f"{main}: reads its {kind} from {name!r}, which the manifest does not list in the artifact's "
            f"extra_files, so it cannot be verified; {_REEXPORT}")


# -- reading ---------------------------------------------------------------------------------------------

def read_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Read a bundle directory and validate its manifest (file hashes are checked when files are read:
    :meth:`Bundle.read_verified`, :meth:`Bundle.verify_all`)."""
    root = Path(path)
    manifest_path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"no bundle directory at {root}")
    if not manifest_path.is_file():
        raise BundleError(f"{root} is not a kvqe bundle: {MANIFEST} is missing")
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise BundleError(f"{manifest_path}: cannot be read ({exc.strerror})") from None
    manifest = parse_manifest(raw, manifest_path)
    return Bundle(root, manifest, tuple(Artifact.from_json(e) for e in manifest["artifacts"]))
