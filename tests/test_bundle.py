"""Bundle reading, manifest validation against the published schema, hash verification and atomic writes."""
from __future__ import annotations

import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import kvqe
from kvqe.bundle import (
    BACKENDS,
    PRECISIONS,
    TASKS,
    check_manifest,
    manifest_schema,
    read_bundle,
    write_manifest,
)
from kvqe.cli import main
from kvqe.errors import BundleError
from kvqe.files import atomic_output_dir, atomic_output_file
from kvqe.sdk.loader import embedded_bundle_path


@pytest.fixture
def sr_copy(tmp_path: Path) -> Path:
    target = tmp_path / "sr"
    shutil.copytree(embedded_bundle_path("sr"), target)
    return target


def flip_one_byte(path: Path, offset: int = 1000) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_embedded_bundle_verifies_and_records_provenance() -> None:
    bundle = read_bundle(embedded_bundle_path("sr"))
    assert bundle.task == "sr" and bundle.model_name == "realesr-animevideov3"
    assert bundle.verify_all() == {"model.fp32.onnx": None, "validation.npz": None}
    assert "BSD-3-Clause" in bundle.manifest["licence"]
    weights = bundle.manifest["weights"]
    assert "REALESRGAN_ANIMAVIDEOV3_UP4X" in weights["source"]
    assert all(len(f["sha256"]) == 64 for f in weights["files"].values())
    (artifact,) = bundle.artifacts
    assert artifact.record["accuracy"]["max_abs_diff"] <= 1e-4
    assert artifact.record["export"]["opset"] == 18 and artifact.record["producer"]["torch"].startswith("2.13")


def test_one_changed_byte_is_refused_naming_the_file(sr_copy: Path) -> None:
    flip_one_byte(sr_copy / "model.fp32.onnx")
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: sha256 mismatch"):
        kvqe.load(sr_copy)
    assert read_bundle(sr_copy).verify_all()["model.fp32.onnx"] is not None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: (p / "manifest.json").unlink(), "manifest.json is missing"),
        (lambda p: (p / "manifest.json").write_text("{not json"), "not valid JSON"),
        (lambda p: (p / "model.fp32.onnx").unlink(), "missing from the bundle"),
    ],
)
def test_broken_bundles_give_plain_errors(sr_copy: Path, mutate, message: str) -> None:
    mutate(sr_copy)
    with pytest.raises(BundleError, match=message):
        kvqe.load(sr_copy)


def test_manifest_fields_are_checked(sr_copy: Path) -> None:
    manifest = json.loads((sr_copy / "manifest.json").read_text())
    manifest["schema_version"] = 99
    (sr_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="schema_version 99"):
        read_bundle(sr_copy)
    manifest["schema_version"] = 1
    manifest["artifacts"][0]["file"] = "../escape.onnx"
    (sr_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="plain name"):
        read_bundle(sr_copy)


def test_missing_artifact_for_requested_backend_lists_what_exists() -> None:
    with pytest.raises(BundleError, match="onnxruntime/fp32"):
        kvqe.load("sr", precision="int8")


def test_atomic_dir_leaves_nothing_on_failure_and_keeps_the_old_bundle(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(target) as stage:
        (stage / "half.onnx").write_bytes(b"x")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_output_dir(target) as stage:
        (stage / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(target) as stage:
        (stage / "a").write_text("new")
        raise KeyboardInterrupt
    assert (target / "a").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_output_dir(target) as stage:
        (stage / "b").write_text("replaced")
    assert [p.name for p in target.iterdir()] == ["b"] and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_file_appears_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    with pytest.raises(ValueError), atomic_output_file(target) as tmp:
        tmp.write_bytes(b"partial")
        raise ValueError
    assert list(tmp_path.iterdir()) == []
    with atomic_output_file(target) as tmp:
        assert tmp.suffix == ".png"
        tmp.write_bytes(b"done")
    assert target.read_bytes() == b"done" and list(tmp_path.iterdir()) == [target]


# --- the manifest schema ------------------------------------------------------------------------------

def _write_edited(source: Path, target: Path, edit: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
    """A bundle folder holding only ``source``'s manifest, edited (reading fails before any file is opened)."""
    target.mkdir()
    manifest = json.loads((source / "manifest.json").read_text())
    if edit is not None:
        edit(manifest)
    (target / "manifest.json").write_text(text if text is not None else json.dumps(manifest, indent=2))
    return target


VQA_ARTIFACT_BYTES = json.loads((embedded_bundle_path("vqa") / "manifest.json").read_text())["artifacts"][0]["bytes"]
# issue #23: each malformed field -> the JSON path and the words the message must hold
MALFORMED: dict[str, tuple[Callable[[dict], None] | None, str]] = {
    "bytes: 1e999": (None, "artifacts[0].bytes: 1e999 is not a finite number"),
    "bytes: NaN": (lambda m: m["artifacts"][0].update(bytes="NaN-placeholder"), "artifacts[0].bytes: NaN is not a finite"),
    "artifacts: 5": (lambda m: m.update(artifacts=5), "artifacts: 5 is not of type 'array'"),
    "per_second: 0": (lambda m: m["input"]["sampling"].update(per_second=0), "input.sampling.per_second: 0 is less"),
    "max_frames: 0": (lambda m: m["input"]["sampling"].update(max_frames=0), "input.sampling.max_frames: 0 is less"),
    "missing score_range": (lambda m: m["output"].pop("score_range"), "output.score_range: required field is missing"),
    "score_range reversed": (lambda m: m["output"].update(score_range=[100.0, 0.0]),
                             "output.score_range: [100.0, 0.0] must be increasing"),
    "unknown runtime key": (lambda m: m["artifacts"][0].update(runtime={"turbo": True}),
                            "artifacts[0].runtime.turbo: unknown key; no keys are allowed here"),
    "unknown openvino option": (lambda m: m["artifacts"][0].update(backend="openvino", runtime={"threads": 2}),
                                "artifacts[0].runtime.threads: unknown key; allowed here: inference_precision"),
    "deployable: 'false'": (lambda m: m["artifacts"][0].update(deployable="false"),
                            "artifacts[0].deployable: 'false' is not of type 'boolean'"),
    "unknown top-level key": (lambda m: m.update(extras={}), "extras: unknown key"),
    "max_frames: 8.0": (lambda m: m["input"]["sampling"].update(max_frames=8.0),
                        "input.sampling.max_frames: 8.0 is not of type 'integer'"),
    "mean/std lengths": (lambda m: m["input"].update(std=[0.2]), "input.std: 1 values for 6 means"),
    "gates not strings": (lambda m: m["artifacts"][0]["accuracy"].update(gates=[1]),
                          "artifacts[0].accuracy.gates[0]: 1 is not of type 'string'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifests_exit_2_naming_the_field(tmp_path: Path, case: str) -> None:
    edit, message = MALFORMED[case]
    text = None
    if case == "bytes: 1e999":
        text = (embedded_bundle_path("vqa") / "manifest.json").read_text().replace(
            f'"bytes": {VQA_ARTIFACT_BYTES}', '"bytes": 1e999')
    bundle = _write_edited(embedded_bundle_path("vqa"), tmp_path / "b", edit, text)
    if case == "bytes: NaN":
        manifest = bundle / "manifest.json"
        manifest.write_text(manifest.read_text().replace('"NaN-placeholder"', "NaN"))
    with pytest.raises(BundleError, match="manifest.json") as raised:
        kvqe.load(bundle)
    assert message in str(raised.value)
    result = CliRunner().invoke(main, ["info", str(bundle), "--json"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in json.loads(result.stdout.splitlines()[-1])["error"]


def _tensorrt_entry(onnx_entry: dict) -> dict:
    """A TensorRT artifact entry as the exporter writes it (``build_engine``'s record, the SR tile bound)."""
    record = {"builder": "tensorrt", "tensorrt": "10.13.0", "strongly_typed": True,
              "fingerprint": {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.13.0"},
              "precision_source": "the ONNX", "onnx_sha256": onnx_entry["sha256"],
              "profiles": [{"input": [[1, 3, 16, 16], [1, 3, 276, 276], [1, 3, 276, 276]]}],
              "workspace_bytes": 1 << 30, "cache_key": "nvidia-l4-sm89-trt10.13.0-0123456789abcdef",
              "engine_bytes": 1234, "max_tile": 256}
    files = [{"file": "model.tensorrt.fp16.engine", "sha256": "1" * 64, "bytes": 1234},
             {"file": "model.tensorrt.fp16.json", "sha256": "2" * 64, "bytes": 600}]
    return {"backend": "tensorrt", "precision": "fp16", "format": "tensorrt", **files[0], "extra_files": files[1:],
            "export": record, "runtime": {}, "executed_precision": None, "producer": {"torch": "2.13.0"},
            "policy": None, "calibration": None, "deployable": True,
            "accuracy": {"reference": "onnxruntime fp32", "metrics": {"psnr": 51.2, "psnr_min": 48.0, "ssim": 0.999},
                         "gates": ["psnr>=35"], "results": [], "failures": [], "passed": True}}


def test_the_embedded_manifests_validate_against_the_published_schema(tmp_path: Path) -> None:
    """Any Draft 2020-12 validator accepts them; kvqe's own check too, and writing one back gives its bytes."""
    schema = manifest_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for name in ("sr", "vqa"):
        source = embedded_bundle_path(name) / "manifest.json"
        manifest = json.loads(source.read_text())
        jsonschema.Draft202012Validator(schema).validate(manifest)
        check_manifest(manifest)
        (tmp_path / name).mkdir()
        write_manifest(tmp_path / name, manifest)
        assert (tmp_path / name / "manifest.json").read_bytes() == source.read_bytes()
    manifest = json.loads((embedded_bundle_path("sr") / "manifest.json").read_text())
    manifest["artifacts"].append(_tensorrt_entry(manifest["artifacts"][0]))
    check_manifest(manifest)


def test_an_undefined_figure_is_written_as_null_and_a_non_finite_runtime_value_refused(tmp_path: Path) -> None:
    manifest = json.loads((embedded_bundle_path("vqa") / "manifest.json").read_text())
    manifest["artifacts"][0]["accuracy"]["srocc"] = float("nan")
    write_manifest(tmp_path, manifest)
    assert json.loads((tmp_path / "manifest.json").read_text())["artifacts"][0]["accuracy"]["srocc"] is None
    manifest["output"]["score_range"] = [0.0, float("inf")]
    with pytest.raises(BundleError, match=r"output\.score_range\[1\]: None is not of type 'number'"):
        write_manifest(tmp_path, manifest)


def test_the_schema_names_what_the_code_accepts() -> None:
    """Backends, precisions, tasks, pipeline kinds and each runner's keyword options are the schema's."""
    from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
    from kvqe.runtimes.tensorrt import TensorRTRunner
    from kvqe.sdk.pipelines.sinsr import KINDS, OUT_SCALES, TILE_STAGES

    defs = manifest_schema()["$defs"]
    assert defs["backend"]["enum"] == list(BACKENDS) and defs["precision"]["enum"] == list(PRECISIONS)
    assert manifest_schema()["properties"]["task"]["enum"] == list(TASKS)
    pipeline = defs["pipeline"]["properties"]
    assert pipeline["kind"]["enum"] == list(KINDS) and pipeline["out_scale"]["enum"] == list(OUT_SCALES)
    assert pipeline["exact_tiling"]["properties"]["norms"]["required"] == list(TILE_STAGES)

    def options(runner: type) -> set[str]:
        parameters = inspect.signature(runner.__init__).parameters.values()  # type: ignore[misc]
        return {p.name for p in parameters if p.kind is p.KEYWORD_ONLY} - {"threads"}  # threads: from the caller

    assert options(OnnxRuntimeRunner) == set(defs["noRuntimeOptions"]["properties"])
    assert options(TensorRTRunner) == set(defs["tensorrtOptions"]["properties"])
    openvino = pytest.importorskip("kvqe.runtimes.openvino")
    assert options(openvino.OpenVinoRunner) == set(defs["openvinoOptions"]["properties"])
    ov_options = defs["openvinoOptions"]["properties"]
    assert ov_options["inference_precision"]["enum"] == list(openvino.PRECISIONS)
    assert ov_options["performance_hint"]["enum"] == list(openvino.PERFORMANCE_HINTS)
