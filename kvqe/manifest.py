"""The bundle manifest (``manifest.json``): reading, validating and writing it.

The manifest is validated as a whole when it is read: against the published JSON Schema
(``kvqe/schemas/manifest-v1.schema.json``, Draft 2020-12; integers without a fraction, no NaN or Infinity)
and then for what a schema cannot say (no key twice in one object, ranges increasing and pixel ranges of a
plausible size, one hash per file name, stages declared). A
malformed manifest is a :class:`BundleError` naming the field's JSON path; after validation, reading the
typed fields cannot fail. The bundle around it (artifacts, verified files) is :mod:`kvqe.bundle`.
"""
from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Self

import jsonschema
from jsonschema.exceptions import ValidationError, relevance

from kvqe.errors import BundleError
from kvqe.specs import InputSpec, OutputSpec
from kvqe.version import __version__

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA_FILE = "manifest-v1.schema.json"  # in kvqe/schemas/
TASKS = ("vqa", "sr")
BACKENDS = ("onnxruntime", "openvino", "tensorrt", "torch")
PRECISIONS = ("fp32", "fp16", "int8")
MODEL_STAGE = "model"  # the stage of every artifact of a single-graph bundle
MAX_DEPTH = 64  # nesting levels a manifest may have (the exporter's reach 7)
_REPORTED_ERRORS = 3
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# the ends of a pixel value range (input and output of a model): 16-bit code values at most, and a span of
# at least this, so that pixels neither vanish into a huge range nor blow up from a tiny one
PIXEL_RANGE_END, PIXEL_RANGE_SPAN = 65535.0, 1e-3

JsonPath = Sequence["str | int"]


# -- reading and validating ----------------------------------------------------------------------------

def parse_manifest(raw: bytes, where: Path | str = MANIFEST) -> dict[str, Any]:
    """The manifest in ``raw`` (UTF-8 JSON), validated by :func:`check_manifest`."""
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_float=_number, parse_constant=_NonFinite,
                              object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as exc:
        raise BundleError(f"{where}: the key {exc.key!r} appears twice in one object (JSON readers disagree on "
                          "which value counts); fix the manifest or re-export the bundle") from None
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


class _DuplicateKeyError(ValueError):
    """A key given twice in one JSON object."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's pairs as a dict; _DuplicateKeyError for a key given twice."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKeyError(key)
        result[key] = value
    return result


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
        elif value is not None and key == "value_range" and not (
                max(abs(value[0]), abs(value[1])) <= PIXEL_RANGE_END and value[1] - value[0] >= PIXEL_RANGE_SPAN):
            problems.append(_at([section, key], f"{value} is not a pixel value range (its ends within "
                                                f"±{PIXEL_RANGE_END:.0f}, at least {PIXEL_RANGE_SPAN:g} apart, "
                                                "e.g. [0, 1] or [0, 255])"))
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


# -- the typed manifest --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` holds, typed at the top level: the model (name, description, params, gflops,
    flops_input), its task and specs, where its weights came from, the stored validation set, one entry per
    artifact (``kvqe.bundle.Artifact`` reads them), and for some models their training or pipeline record.
    ``schema_version`` is the format's; :func:`parse_manifest` refuses any other. Frozen: safe to share."""

    model: dict[str, Any]
    task: str
    input: InputSpec
    output: OutputSpec
    artifacts: tuple[dict[str, Any], ...]
    weights: dict[str, Any] | None = None
    licence: str | None = None
    validation: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None
    kvqe_version: str | None = __version__
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, manifest: dict[str, Any]) -> Manifest:
        """The manifest of a document that passed :func:`check_manifest`."""
        return cls(model=manifest["model"], task=manifest["task"], input=InputSpec.from_json(manifest["input"]),
                   output=OutputSpec.from_json(manifest["output"]), artifacts=tuple(manifest["artifacts"]),
                   **{key: manifest.get(key) for key in _OPTIONAL}, schema_version=manifest["schema_version"])

    def to_json(self) -> dict[str, Any]:
        """The JSON document (optional entries left out when None)."""
        document: dict[str, Any] = {
            "schema_version": self.schema_version, "model": self.model, "task": self.task,
            "input": self.input.to_json(), "output": self.output.to_json(), "artifacts": list(self.artifacts)}
        document.update({key: getattr(self, key) for key in _OPTIONAL if getattr(self, key) is not None})
        return document


_OPTIONAL = ("weights", "licence", "validation", "training", "pipeline", "kvqe_version")


# -- writing -------------------------------------------------------------------------------------------

def write_manifest(directory: Path, manifest: Manifest | dict[str, Any]) -> None:
    """Write ``manifest.json`` (stable key order and formatting, so equal bundles are equal bytes) after
    validating it. JSON has no NaN or Infinity: an undefined measured figure (e.g. a correlation over
    constant scores) is written as null; a non-finite value where a runtime reads one fails validation."""
    finite = finite_or_null(manifest.to_json() if isinstance(manifest, Manifest) else manifest)
    check_manifest(finite, directory / MANIFEST)
    text = json.dumps(finite, indent=2, sort_keys=True, allow_nan=False) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")


def finite_or_null(value: Any) -> Any:
    """``value`` (JSON-like) with every NaN or infinite float replaced by None (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(item) for item in value]
    return value
