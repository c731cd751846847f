"""The export toolchain end to end on real media: every format and precision from one command, accuracy
gates against the FP32 reference, gates that fail when they must, verify, and one API over all artifacts, on
realesr-animevideov3 (x4plus: test_export_x4plus.py; the VQA students: test_export_vqa.py)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from artifacts import SharedArtifacts, file_sha256
from support import EVERY_FORMAT, cli, json_lines, psnr

import kvqe
from kvqe.bundle import manifest_schema, read_bundle
from kvqe.errors import BundleError

pytest.importorskip("openvino")
pytestmark = pytest.mark.e2e  # every test runs kvqe-export in a subprocess (fast tier: test_tiny_models.py)


@pytest.fixture(scope="module")
def sr_bundle(artifacts: SharedArtifacts, sr_photos: Path) -> tuple[Path, dict]:
    """animevideov3 in every format and precision, calibrated on ``sr_photos``: built once per run."""
    key = {"model": "realesr-animevideov3", "weights": "official", "formats": EVERY_FORMAT,
           "calibration": {path.name: file_sha256(path) for path in sorted(sr_photos.iterdir())}, "calib_size": 24}
    return artifacts.cli_export("animevideov3-all-formats", key, "anime-all", "realesr-animevideov3", *EVERY_FORMAT,
                                "--calib", str(sr_photos), "--calib-size", "24")


def test_one_command_builds_every_artifact_and_all_pass_their_gates(sr_bundle) -> None:
    """animevideov3 in every format and precision, INT8 calibrated on real photos: each artifact passes its gate,
    the manifest validates against the published schema and every file against its recorded hash."""
    out, summary = sr_bundle
    built = {(a["backend"], a["precision"]): a for a in summary["artifacts"]}
    assert set(built) == {(b, p) for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")}
    assert all(a["deployable"] for a in built.values()), summary
    assert built[("onnxruntime", "int8")]["metrics"]["psnr"] >= 35
    assert built[("openvino", "int8")]["metrics"]["psnr"] >= 35
    assert built[("onnxruntime", "fp16")]["metrics"]["psnr"] >= 45 and built[("openvino", "fp16")]["metrics"]["psnr"] >= 45
    manifest = read_bundle(out).manifest
    jsonschema.Draft202012Validator(manifest_schema()).validate(manifest)
    assert read_bundle(out).verify_all() and all(v is None for v in read_bundle(out).verify_all().values())
    assert all(a.extra_files for a in read_bundle(out).artifacts if a.backend == "openvino")  # the IR's .bin
    for entry in manifest["artifacts"]:
        if entry["backend"] == "openvino":  # recorded precision is the one actually executed, never bf16
            assert entry["runtime"] == {"inference_precision": "f32"} and entry["executed_precision"] == "f32"
        if entry["precision"] == "int8":
            assert entry["calibration"]["calibration"]["samples"] == 24
            assert len(entry["calibration"]["sources_sha256"]) == 64
            assert entry["policy"]["name"] == "conv-sr"
    assert manifest["validation"]["record"]["validation_shares_source"] is False


def test_the_same_enhance_call_runs_every_artifact(sr_bundle, astronaut_bgr) -> None:
    out, _ = sr_bundle
    image = np.ascontiguousarray(astronaut_bgr[200:248, 220:276])
    reference = kvqe.load(out, backend="onnxruntime", precision="fp32").enhance(image)
    for backend in ("onnxruntime", "openvino"):
        for precision in ("fp32", "fp16", "int8"):
            model = kvqe.load(out, backend=backend, precision=precision)
            result = model.enhance(image)
            assert (model.backend, model.precision) == (backend, precision)
            assert result.shape == (192, 224, 3)
            assert psnr(result, reference) >= (35 if precision == "int8" else 45)


def test_verify_reruns_the_gates_here(sr_bundle) -> None:
    out, _ = sr_bundle
    records = json_lines(cli("kvqe", "verify", str(out), "--json", check_code=0))
    assert len(records) == 5 and all(r["passed"] for r in records)


def test_a_gate_above_reach_fails_the_release_but_keeps_the_artifact(sr_photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats", "onnxruntime-int8",
                 "--calib", str(sr_photos), "--calib-size", "8", "--gate", "int8:psnr>=80", "--search-budget", "0",
                 "--json", check_code=3)  # no search for layers to keep float: the gate's verdict is the point here
    (summary,) = json_lines(result)
    int8 = next(a for a in summary["artifacts"] if a["precision"] == "int8")
    assert int8["deployable"] is False and "short by" in int8["failures"][0]
    assert (out / int8["file"]).is_file()
    with pytest.raises(BundleError, match="deployable: false"):
        kvqe.load(out, precision="int8")
    assert kvqe.load(out, precision="int8", allow_undeployable=True).precision == "int8"
    cli("kvqe", "verify", str(out), check_code=3)


def test_calibrating_on_one_black_frame_is_reported_and_fails_the_gate(tmp_path: Path, sr_photos: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "black.png"), np.zeros((128, 128, 3), np.uint8))
    shutil.copy(sr_photos / "coffee.png", calib / "coffee.png")
    listing = tmp_path / "calib.txt"  # with seed 0 the photo validates and the black frame calibrates
    listing.write_text("calib/coffee.png\ncalib/black.png\n")
    out = tmp_path / "black"
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats", "onnxruntime-int8",
                 "--calib", str(listing), "--search-budget", "0", "--json")  # the miss is the point, not a search
    (summary,) = json_lines(result)
    assert any("near-constant" in w for w in summary["warnings"]), summary["warnings"]
    manifest = read_bundle(out).manifest
    assert manifest["validation"]["record"]["validation"]["sources"] == ["coffee.png"]
    assert result.returncode == 3
    assert not next(a for a in summary["artifacts"] if a["precision"] == "int8")["deployable"]


def test_tensorrt_without_a_gpu_exits_4_and_keeps_the_other_formats(tmp_path: Path) -> None:
    out = tmp_path / "trt"
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats", "onnx,tensorrt", "--json")
    assert result.returncode == 4 and b"Traceback" not in result.stderr
    (summary,) = json_lines(result)
    assert summary["unavailable"][0]["format"] == "tensorrt"
    assert [a.backend for a in read_bundle(out).artifacts] == ["onnxruntime"]
