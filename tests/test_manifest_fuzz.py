"""Fuzzing manifest parsing: whatever ``manifest.json`` holds, ``read_bundle`` either returns a bundle whose
typed fields and checks all work, or raises BundleError; never anything else.

Inputs: valid manifests (the embedded ones, an exporter-style multi-format one, a SinSR pipeline one)
mutated at random JSON paths (a value dropped, replaced by random JSON, retyped, a key renamed or added),
random JSON documents, random bytes, and valid manifest text with bytes flipped or cut. The example count
is bounded so that the test runs in CI in seconds; it prints how many inputs it tried.
"""
from __future__ import annotations

import copy
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvqe.bundle import MANIFEST, PRECISIONS, read_bundle
from kvqe.errors import BundleError
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.sdk.pipelines import describe

EXAMPLES = 400
HEX = "0123456789abcdef"


def _pipeline_manifest() -> dict[str, Any]:
    """A SinSR pipeline manifest of the exporter's form: one ONNX and one OpenVINO artifact per stage."""
    sr = json.loads((embedded_bundle_path("sr") / MANIFEST).read_text())
    pipeline = describe("sinsr", out_scale=4, precisions={"int8": {"encoder": "fp32", "decoder": "fp32"}},
                        exact_tiling={"norms": {"encoder_high": 3, "decoder_high": 5}}, configurations=[])
    artifacts = []
    for index, stage in enumerate(pipeline["stages"]):
        onnx = {"stage": stage, "backend": "onnxruntime", "precision": "fp32", "format": "onnx",
                "file": f"{stage}.fp32.onnx", "sha256": HEX[index] * 64, "bytes": 100 + index, "deployable": True}
        xml = {"stage": stage, "backend": "openvino", "precision": "fp32", "format": "openvino",
               "file": f"{stage}.openvino.fp32.xml", "sha256": HEX[index + 1] * 64, "bytes": 10,
               "extra_files": [{"file": f"{stage}.openvino.fp32.bin", "sha256": HEX[index + 2] * 64, "bytes": 20}],
               "runtime": {"inference_precision": "f32", "multi_io": stage.endswith("_high")}, "deployable": False}
        artifacts += [onnx, xml]
    return {**sr, "model": {"name": "sinsr"}, "input": {**sr["input"], "multiple_of": 64}, "artifacts": artifacts,
            "pipeline": pipeline}


def _multi_format_manifest() -> dict[str, Any]:
    """The embedded SR manifest plus OpenVINO and TensorRT artifacts as the exporter writes them."""
    manifest = json.loads((embedded_bundle_path("sr") / MANIFEST).read_text())
    manifest["artifacts"] += [
        {"backend": "openvino", "precision": "int8", "format": "openvino", "file": "model.openvino.int8.xml",
         "sha256": "a" * 64, "bytes": 1, "extra_files": [{"file": "model.openvino.int8.bin", "sha256": "b" * 64,
                                                          "bytes": 2}],
         "runtime": {"inference_precision": "f32"}, "executed_precision": "f32", "policy": {"name": "conv-sr"},
         "calibration": {"samples": 12}, "accuracy": {"gates": ["psnr>=35"], "passed": True}, "deployable": True},
        {"backend": "tensorrt", "precision": "fp16", "format": "tensorrt", "file": "model.tensorrt.fp16.engine",
         "sha256": "c" * 64, "bytes": 3, "extra_files": [{"file": "model.tensorrt.fp16.json", "sha256": "d" * 64,
                                                          "bytes": 4}],
         "export": {"max_tile": 256, "fingerprint": {"gpu": "NVIDIA L4"}}, "runtime": {}, "deployable": True},
    ]
    return manifest


VALID = [json.loads((embedded_bundle_path(name) / MANIFEST).read_text()) for name in ("sr", "vqa")]
VALID += [_multi_format_manifest(), _pipeline_manifest()]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into ``document`` (dict keys and list indices), the document itself first."""
    found = [prefix]
    if isinstance(document, dict):
        for key, value in document.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            found += _paths(value, (*prefix, index))
    return found


def _retyped(value: Any) -> list[Any]:
    """The same value in other JSON types (the ways a hand-edited or buggy manifest gets a type wrong)."""
    return [str(value), [value], {"value": value}, not value, None, 0, 1.5, -1, "", 1e308, 2**64]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    document = copy.deepcopy(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(document)))
        if not path:
            document = draw(json_values)
            continue
        *parents, last = path
        parent = document
        for part in parents:
            parent = parent[part]
        operation = draw(st.sampled_from(("drop", "replace", "retype", "rename", "add")))
        if operation == "drop":
            del parent[last]
        elif operation == "replace":
            parent[last] = draw(json_values)
        elif operation == "retype":
            parent[last] = draw(st.sampled_from(_retyped(parent[last])))
        elif isinstance(parent, dict):
            key = draw(st.text(max_size=10))
            parent[key] = parent.pop(last) if operation == "rename" else draw(json_values)
    return json.dumps(document, allow_nan=True).encode()


@st.composite
def damaged_text(draw: st.DrawFn) -> bytes:
    """Valid manifest text with a few bytes changed, or cut short."""
    data = bytearray(json.dumps(draw(st.sampled_from(VALID)), indent=2).encode())
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))]) if draw(st.booleans()) else bytes(data)


documents = st.one_of(
    mutated(), mutated(), mutated(), damaged_text(), st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value, allow_nan=True).encode()),
)


def _use(bundle_dir: Path) -> str:
    """Read the bundle and touch every typed field and check; the outcome's name."""
    try:
        bundle = read_bundle(bundle_dir)
    except BundleError:
        return "refused"
    assert bundle.task in ("vqa", "sr") and bundle.model_name
    # the typed specs hold every field of the manifest's and write it back unchanged
    assert bundle.input_spec.to_json() == bundle.manifest["input"]
    assert bundle.output_spec.to_json() == bundle.manifest["output"]
    assert bundle.stages and (bundle.pipeline is None or bundle.pipeline["stages"] == list(bundle.stages))
    for stage in bundle.stages:
        for precision in PRECISIONS:
            assert bundle.stage_precision(precision, stage) in PRECISIONS
    for artifact in bundle.artifacts:
        assert isinstance(artifact.runtime_options, dict) and isinstance(artifact.deployable, bool)
        assert bundle.find(artifact.backend, artifact.precision, artifact.stage) is artifact
    assert bundle.validation is None or bundle.validation.bytes >= 0
    checks = bundle.verify_all()  # the files are absent: every check reports, none raises
    assert all(isinstance(message, str) for message in checks.values())
    return "accepted"


def test_manifest_parsing_raises_only_bundle_errors(tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(document=documents)
    def parse(document: bytes) -> None:
        (tmp_path / MANIFEST).write_bytes(document)
        outcomes[_use(tmp_path)] += 1

    started = time.perf_counter()
    parse()
    seconds = time.perf_counter() - started
    print(f"\nmanifest fuzz: {sum(outcomes.values())} inputs in {seconds:.1f} s ({dict(outcomes)})")
    assert sum(outcomes.values()) >= EXAMPLES and outcomes["refused"]


@pytest.mark.parametrize("index", range(len(VALID)))
def test_the_fuzz_seeds_are_valid(tmp_path: Path, index: int) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps(VALID[index]))
    assert _use(tmp_path) == "accepted"
