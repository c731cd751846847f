"""Bundle format: a directory with ``manifest.json`` and artifact files beside it.

The manifest is validated as a whole when it is read: against the published JSON Schema
(``kvqe/schemas/manifest-v1.schema.json``, Draft 2020-12; integers without a fraction, no NaN or Infinity)
and then for what a schema cannot say (ranges increasing, one hash per file name, stages declared). A
malformed manifest is a :class:`BundleError` naming the field's JSON path; after validation, reading the
typed fields cannot fail.

Integrity: every file a runtime opens is listed in the manifest with its sha256 and size, and is checked
before any parser sees it. :meth:`Bundle.read_verified` hands out the checked bytes themselves (an
artifact's main file and its companions: an OpenVINO IR's ``.bin``, a TensorRT engine's build record,
ONNX external data), so nothing can change between the check and the parse. A format's companion that the
manifest does not list is an error, not a file read unchecked. A mismatch is an error, never a warning.
Writing is atomic (see :func:`kvqe.files.atomic_output_dir`).

A bundle runs one graph (every artifact is stage ``"model"``) or a staged pipeline: the manifest then
carries ``"pipeline": {"kind", "stages": [names in run order], ...}`` (the constants and the glue between
the stages, see :mod:`kvqe.sdk.pipeline`), each artifact entry names its ``"stage"``, and the runtime runs
one artifact per stage. Schema version 1 stays readable both ways: an entry without ``"stage"`` is
``"model"``, and a manifest without ``"pipeline"`` is one graph.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, NamedTuple, Self

import jsonschema
from jsonschema.exceptions import ValidationError, relevance

from kvqe.errors import BundleError
from kvqe.files import ModelFiles, sha256_file

if TYPE_CHECKING:
    import onnx

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA_FILE = "manifest-v1.schema.json"  # in kvqe/schemas/
TASKS = ("vqa", "sr")
BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_STAGE = "model"  # the stage of every artifact of a single-graph bundle
MAX_DEPTH = 64  # nesting levels a manifest may have (the exporter's reach 7)
_REPORTED_ERRORS = 3
_REEXPORT = "re-export the bundle"
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

JsonPath = Sequence["str | int"]


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
                data = handle.read(size + 1)
                actual_size = len(data) if len(data) <= size else os.fstat(handle.fileno()).st_size
        except OSError as exc:
            raise BundleError(f"{path}: cannot be read ({exc.strerror}); {_REEXPORT}") from None
        if len(data) != size:
            raise BundleError(_size_message(path, actual_size, size))
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


def onnx_external_data(data: bytes, where: Path | str) -> tuple[str, ...]:
    """The external data locations an ONNX model names (in graph order), read from its bytes without
    opening any of them; BundleError if the bytes are not an ONNX model."""
    if b"location" not in data:  # the key every external data entry carries: no entry can be present
        return ()
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError) as exc:
        raise BundleError(f"{where}: not an ONNX model ({exc}); {_REEXPORT}") from None
    locations = [next((e.value for e in tensor.external_data if e.key == "location"), "")
                 for tensor in _onnx_tensors(model) if tensor.data_location == onnx.TensorProto.EXTERNAL]
    return tuple(dict.fromkeys(locations))


def _onnx_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a model stores: initializers, sparse initializers, node attributes, subgraphs, functions."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        for node in function.node:
            yield from _node_tensors(node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: onnx.NodeProto) -> Iterator[onnx.TensorProto]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        sparse_tensors = [*([attribute.sparse_tensor] if attribute.HasField("sparse_tensor") else []),
                          *attribute.sparse_tensors]
        for sparse in sparse_tensors:
            yield from (sparse.values, sparse.indices)
        for graph in [*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs]:
            yield from _graph_tensors(graph)


# -- reading and validating the manifest ---------------------------------------------------------------

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


def parse_manifest(raw: bytes, where: Path | str = MANIFEST) -> dict[str, Any]:
    """The manifest in ``raw`` (UTF-8 JSON), validated by :func:`check_manifest`."""
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_float=_number, parse_constant=_NonFinite)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise BundleError(f"{where}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BundleError(f"{where} is not valid JSON: {exc}") from None
    check_manifest(manifest, where)
    return manifest


def check_manifest(manifest: Any, where: Path | str = MANIFEST) -> None:
    """Validate a parsed manifest as a whole: finite numbers, the schema, then what a schema cannot say.
    Raises BundleError naming the first problems by their JSON path (``artifacts[0].deployable``)."""
    for path, value in _walk(manifest):
        if len(path) > MAX_DEPTH:
            raise BundleError(f"{where}: {_json_path(path[:MAX_DEPTH])}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            literal = value.literal if isinstance(value, _NonFinite) else repr(value)
            raise BundleError(f"{where}: {_json_path(path)}: {literal} is not a finite number "
                              "(JSON has no NaN or Infinity); fix the manifest or re-export the bundle")
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        raise BundleError(f"{where}: schema_version {version} is not supported (this kvqe reads "
                          f"{SCHEMA_VERSION}); upgrade kvqe or re-export the bundle")
    errors = sorted(_validator().iter_errors(manifest), key=relevance, reverse=True)
    problems = list(dict.fromkeys(_describe(error) for error in errors)) or _meaning_problems(manifest)
    if problems:
        shown = "; ".join(problems[:_REPORTED_ERRORS])
        more = f" (and {len(problems) - _REPORTED_ERRORS} more)" if len(problems) > _REPORTED_ERRORS else ""
        raise BundleError(f"{where}: {shown}{more}; fix the manifest or re-export the bundle")


def manifest_schema() -> dict[str, Any]:
    """The published JSON Schema of manifest ``schema_version`` 1."""
    return json.loads(_schema_text())


@functools.cache
def _schema_text() -> str:
    return (resources.files("kvqe") / "schemas" / SCHEMA_FILE).read_text(encoding="utf-8")


def _is_integer(checker: Any, instance: Any) -> bool:
    """A JSON integer is written without a fraction or exponent (``4``, not ``4.0`` or ``4e0``)."""
    return isinstance(instance, int) and not isinstance(instance, bool)


@functools.cache
def _validator() -> Any:
    base = jsonschema.Draft202012Validator
    strict = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_integer))
    return strict(manifest_schema())


class _NonFinite(float):
    """A NaN or infinite number as the manifest wrote it (``NaN``, ``Infinity``, ``1e999``), kept so that
    :func:`check_manifest` can report it with its path."""

    literal: str

    def __new__(cls, literal: str) -> Self:
        value = super().__new__(cls, literal)
        value.literal = literal
        return value


def _number(literal: str) -> float:
    value = float(literal)
    return value if math.isfinite(value) else _NonFinite(literal)


def _walk(document: Any) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(path, value) of every value in a JSON document, in document order, without recursion."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        yield path, value
        if len(path) > MAX_DEPTH:
            continue
        if isinstance(value, dict):
            stack.extend(((*path, key), item) for key, item in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*path, index), item) for index, item in reversed(list(enumerate(value))))


def _json_path(path: JsonPath) -> str:
    """``artifacts[0].runtime.multi_io``; keys that are not plain names in brackets, JSON-quoted."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text


def _at(path: JsonPath, message: str) -> str:
    return f"{_json_path(path)}: {message}" if path else message


def _describe(error: ValidationError) -> str:
    """One schema error as ``path: what is wrong`` (unknown and missing keys named in the path)."""
    path = list(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        unknown = [key for key in error.instance if key not in allowed]
        others = f" (also {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else ""
        allowed_text = f"allowed here: {', '.join(allowed)}" if allowed else "no keys are allowed here"
        return _at([*path, unknown[0]], f"unknown key{others}; {allowed_text}")
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [key for key in error.validator_value if key not in error.instance]
        if len(missing) == 1:
            return _at([*path, missing[0]], "required field is missing")
        return _at(path, f"required fields {', '.join(missing)} are missing")
    if error.validator in ("pattern", "not") and "description" in schema:
        return _at(path, f"{_short(repr(error.instance))} is not {schema['description']}")
    return _at(path, _short(error.message))


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def _meaning_problems(manifest: dict[str, Any]) -> list[str]:
    """What a schema cannot say about a schema-valid manifest: ranges increasing, one normalisation value
    per channel, one sha256 and size per file name, artifacts of declared stages only, every stage run."""
    problems: list[str] = []
    for section, key in (("input", "value_range"), ("output", "value_range"), ("output", "score_range")):
        value = manifest[section].get(key)
        if value is not None and not value[0] < value[1]:
            problems.append(_at([section, key], f"{value} must be increasing (low < high)"))
    if len(manifest["input"]["mean"]) != len(manifest["input"]["std"]):
        problems.append(_at(["input", "std"], f"{len(manifest['input']['std'])} values for "
                                              f"{len(manifest['input']['mean'])} means; give one per channel"))
    problems += _file_conflicts(manifest)
    problems += _stage_problems(manifest)
    return problems


def _file_conflicts(manifest: dict[str, Any]) -> list[str]:
    """Entries naming the same file with a different sha256 or size (one of them must be wrong)."""
    entries: list[tuple[list[str | int], dict[str, Any]]] = []
    for index, artifact in enumerate(manifest["artifacts"]):
        entries.append((["artifacts", index], artifact))
        entries += [(["artifacts", index, "extra_files", j], e) for j, e in enumerate(artifact.get("extra_files", []))]
    if "validation" in manifest:
        entries.append((["validation"], manifest["validation"]))
    seen: dict[str, tuple[list[str | int], tuple[str, int]]] = {}
    problems = []
    for path, entry in entries:
        facts = (entry["sha256"], entry["bytes"])
        first = seen.setdefault(entry["file"], (path, facts))
        if first[1] != facts:
            problems.append(_at([*path, "file"], f"{entry['file']!r} is also listed at {_json_path(first[0])} "
                                                 "with a different sha256 or size"))
    return problems


def _stage_problems(manifest: dict[str, Any]) -> list[str]:
    """Every artifact belongs to a declared stage, every declared stage has an artifact, and no two
    artifacts of one stage share a backend and precision."""
    pipeline = manifest.get("pipeline")
    stages: list[str] = pipeline["stages"] if pipeline is not None else [MODEL_STAGE]
    artifacts = manifest["artifacts"]
    problems = []
    strays = sorted({a.get("stage", MODEL_STAGE) for a in artifacts} - set(stages))
    if strays:
        problems.append(_at(["artifacts"], f"artifacts of undeclared stage(s) {', '.join(strays)} "
                                           f"(declared: {', '.join(stages)})"))
    empty = [s for s in stages if not any(a.get("stage", MODEL_STAGE) == s for a in artifacts)]
    if empty:
        problems.append(_at(["pipeline", "stages"] if pipeline is not None else ["artifacts"],
                            f"stage(s) {', '.join(empty)} have no artifact"))
    first: dict[tuple[str, str, str], int] = {}
    for index, a in enumerate(artifacts):
        key = (a["backend"], a["precision"], a.get("stage", MODEL_STAGE))
        if first.setdefault(key, index) != index:
            problems.append(_at(["artifacts", index], f"a second {key[0]}/{key[1]} artifact of stage {key[2]} "
                                                      f"(the first is artifacts[{first[key]}])"))
    return problems


# -- writing -------------------------------------------------------------------------------------------

def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` (stable key order and formatting, so equal bundles are equal bytes) after
    validating it. JSON has no NaN or Infinity: an undefined measured figure (e.g. a correlation over
    constant scores) is written as null; a non-finite value where a runtime reads one fails validation."""
    finite = _finite_or_null(manifest)
    check_manifest(finite, directory / MANIFEST)
    text = json.dumps(finite, indent=2, sort_keys=True, allow_nan=False) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")


def _finite_or_null(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(item) for item in value]
    return value
