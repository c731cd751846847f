"""The export toolchain end to end on real media: every format and precision from one command, accuracy
gates against the FP32 reference, gates that fail when they must, verify, and one API over all artifacts."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
from artifacts import SharedArtifacts, file_sha256
from support import BIKES, BUNNY, CARPHONE, cli, make_clip, needs_ffmpeg, psnr

import kvqe
from kvqe.bundle import manifest_schema, read_bundle
from kvqe.errors import BundleError
from kvqe.export.latency import FASTER_BELOW

pytest.importorskip("openvino")
pytestmark = pytest.mark.e2e  # every test runs kvqe-export in a subprocess (fast tier: test_tiny_models.py)
ALL = ["--formats", "onnx,openvino,onnxruntime-int8", "--precision", "fp32,fp16,int8"]


def lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.decode().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (scikit-image) plus one real clip: SR calibration and validation media."""
    import skimage.data

    folder = tmp_path_factory.mktemp("calib_sr")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat"):
        rgb = getattr(skimage.data, name)()
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)[:256, :256])
    shutil.copy(CARPHONE, folder / "carphone.mp4")
    return folder


@pytest.fixture(scope="module")
def sr_bundle(artifacts: SharedArtifacts, photo_dir: Path) -> tuple[Path, dict]:
    """animevideov3 in every format and precision, calibrated on ``photo_dir``: built once per run."""
    key = {"model": "realesr-animevideov3", "weights": "official", "formats": ALL,
           "calibration": {path.name: file_sha256(path) for path in sorted(photo_dir.iterdir())}, "calib_size": 24}
    return artifacts.cli_export("animevideov3-all-formats", key, "anime-all", "realesr-animevideov3", *ALL,
                                "--calib", str(photo_dir), "--calib-size", "24")


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
    records = lines(cli("kvqe", "verify", str(out), "--json", check_code=0))
    assert len(records) == 5 and all(r["passed"] for r in records)


def test_a_gate_above_reach_fails_the_release_but_keeps_the_artifact(photo_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "strict"
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats", "onnxruntime-int8",
                 "--calib", str(photo_dir), "--calib-size", "8", "--gate", "int8:psnr>=80", "--search-budget", "0",
                 "--json", check_code=3)  # no search for layers to keep float: the gate's verdict is the point here
    (summary,) = lines(result)
    int8 = next(a for a in summary["artifacts"] if a["precision"] == "int8")
    assert int8["deployable"] is False and "short by" in int8["failures"][0]
    assert (out / int8["file"]).is_file()
    with pytest.raises(BundleError, match="deployable: false"):
        kvqe.load(out, precision="int8")
    assert kvqe.load(out, precision="int8", allow_undeployable=True).precision == "int8"
    cli("kvqe", "verify", str(out), check_code=3)


def test_calibrating_on_one_black_frame_is_reported_and_fails_the_gate(tmp_path: Path, photo_dir: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    cv2.imwrite(str(calib / "black.png"), np.zeros((128, 128, 3), np.uint8))
    shutil.copy(photo_dir / "coffee.png", calib / "coffee.png")
    listing = tmp_path / "calib.txt"  # with seed 0 the photo validates and the black frame calibrates
    listing.write_text("calib/coffee.png\ncalib/black.png\n")
    out = tmp_path / "black"
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats", "onnxruntime-int8",
                 "--calib", str(listing), "--search-budget", "0", "--json")  # the miss is the point, not a search
    (summary,) = lines(result)
    assert any("near-constant" in w for w in summary["warnings"]), summary["warnings"]
    manifest = read_bundle(out).manifest
    assert manifest["validation"]["record"]["validation"]["sources"] == ["coffee.png"]
    assert result.returncode == 3
    assert not next(a for a in summary["artifacts"] if a["precision"] == "int8")["deployable"]


def test_tensorrt_without_a_gpu_exits_4_and_keeps_the_other_formats(tmp_path: Path) -> None:
    out = tmp_path / "trt"
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats", "onnx,tensorrt", "--json")
    assert result.returncode == 4 and b"Traceback" not in result.stderr
    (summary,) = lines(result)
    assert summary["unavailable"][0]["format"] == "tensorrt"
    assert [a.backend for a in read_bundle(out).artifacts] == ["onnxruntime"]


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve short real clips (different content, sizes and x264 qualities): VQA calibration/validation."""
    folder = tmp_path_factory.mktemp("calib_vqa")
    for i, (source, size) in enumerate([(BIKES, (320, 136)), (BUNNY, (320, 180)), (CARPHONE, (176, 144))] * 4):
        make_clip(folder, source, frames=30, size=size, fps=15, name=f"clip{i:02d}.mp4", crf=(18, 28, 38, 46)[i // 3])
    return folder


@pytest.fixture(scope="module")
def held_out_clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six more clips of the same videos at other x264 qualities: a held-out VQA validation set (``--val``)."""
    folder = tmp_path_factory.mktemp("val_vqa")
    for i, (source, size) in enumerate([(BIKES, (320, 136)), (BUNNY, (320, 180)), (CARPHONE, (176, 144))] * 2):
        make_clip(folder, source, frames=30, size=size, fps=15, name=f"val{i:02d}.mp4", crf=(23, 33)[i // 3])
    return folder


@pytest.mark.slow  # the longest test of the run: first in the file, so it starts at once
def test_x4plus_int8_on_both_backends_passes_its_default_gates(photo_dir: Path, unseen_photos: Path,
                                                               tmp_path: Path) -> None:
    """Both INT8 artifacts of the full-size x4plus pass their default gates on photos held out from calibration
    and from every policy's tuning (``--val``: 35 dB mean, 30 dB worst): policy rrdb-sr smooths the inputs of
    the 346 int8 trunk convs (SmoothQuant, alpha 0.5) and keeps the first conv and the image-space tail float
    (7.6% of the conv multiply-adds); the INT8 search keeps more float only if that misses, and most of the
    trunk stays int8 either way; OpenVINO INT8 is its QDQ ONNX converted. Each records its latency against
    FP32 on its backend. (Every format and precision of one command, FP16 included, is proven on animevideov3 and on the
    tiny RRDBNet, whose FP16 runs on both backends; x4plus's FP16 and OpenVINO FP32 validations added 7 of this
    test's minutes and no proof of its own.)"""
    out = tmp_path / "x4plus-int8"
    result = cli("kvqe-export", "realesrgan-x4plus", "--out", str(out), "--formats", "onnxruntime-int8,openvino",
                 "--precision", "int8", "--calib", str(photo_dir), "--val", str(unseen_photos), "--calib-size", "16",
                 "--json")
    (summary,) = lines(result)
    built = {(a["backend"], a["precision"]): a for a in summary["artifacts"]}
    assert set(built) == {("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "int8")}
    assert all(a["deployable"] for a in built.values()), summary
    for backend in ("onnxruntime", "openvino"):
        metrics = built[(backend, "int8")]["metrics"]
        assert metrics["psnr"] >= 35.0 and metrics["psnr_min"] >= 30.0, metrics
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in (a for a in manifest["artifacts"] if a["precision"] == "int8"):
        record, search = entry["export"], entry["mixed_precision"]
        assert entry["policy"]["name"] == "rrdb-sr" and record["policy"] == "rrdb-sr"
        assert entry["calibration"]["validation"]["samples"] >= 32 and search["passed"]
        kept = len(search["float_layers"])
        assert record["quantized_nodes"] == {"Conv": 346 - kept} and kept <= 346 // 4  # most of the trunk int8
        assert record["smoothing"]["convs"] == 346
        assert 0.07 < record["float_conv_mac_fraction"] < 0.5
        latency = entry["latency"]  # measured, not asserted: speed is bench/'s (sr_speed.py), never a test's
        assert latency["ms"] > 0 and latency["faster_than_fp32"] == (latency["ratio"] < FASTER_BELOW), latency
    assert result.returncode == 0


@needs_ffmpeg
@pytest.mark.slow
def test_vqa_student_all_formats_pass_default_gates(video_dir: Path, student_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "vqa-all"
    (summary,) = lines(cli("kvqe-export", "vqa-sharpmind-swint", "--weights", f"model={student_checkpoint}",
                           "--out", str(out), *ALL, "--calib", str(video_dir), "--score-range=-1000,1000",
                           "--json", check_code=0))
    assert all(a["deployable"] for a in summary["artifacts"]), summary
    scores = {(b, p): kvqe.load(out, backend=b, precision=p).score(CARPHONE).score
              for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")}
    assert max(abs(s - scores[("onnxruntime", "fp32")]) for s in scores.values()) < 0.5


@needs_ffmpeg
@pytest.mark.slow
def test_distilled_student_all_formats_pass_default_gates(video_dir: Path, held_out_clips: Path,
                                                          tmp_path: Path) -> None:
    """The shipped vqa-student (committed checkpoint): ORT INT8 and OpenVINO FP16/INT8 pass the default VQA
    gates on real clips, and every artifact scores a real video within a point of FP32 (its policy nss-head
    keeps the statistics and the frozen backbone float, the MLP heads int8). OpenVINO INT8 is the QDQ model
    of ONNX Runtime converted, so the two INT8 artifacts agree (NNCF's own quantisation scored real videos up
    to 5 points off FP32). All twelve clips calibrate and six others validate (``--val``): calibrated on six
    of the twelve, the heads' INT8 scored some videos 4-6 points off FP32 while SROCC and PLCC still
    passed (docs/int8_mixed_precision.md)."""
    checkpoint = Path(__file__).resolve().parents[1] / "assets" / "vqa-student.pth"
    out = tmp_path / "student-all"
    (summary,) = lines(cli("kvqe-export", "vqa-student", "--weights", f"model={checkpoint}", "--out", str(out), *ALL,
                           "--calib", str(video_dir), "--val", str(held_out_clips), "--json", check_code=0))
    built = {(a["backend"], a["precision"]): a for a in summary["artifacts"]}
    assert set(built) == {(b, p) for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")}
    assert all(a["deployable"] for a in built.values()), summary
    for key in [k for k in built if k[1] != "fp32" or k[0] == "openvino"]:
        assert built[key]["metrics"]["srocc"] >= 0.98 and built[key]["metrics"]["plcc"] >= 0.98, built[key]
    scores = {(b, p): kvqe.load(out, backend=b, precision=p).score(BIKES).score
              for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16", "int8")}
    reference = scores[("onnxruntime", "fp32")]
    assert abs(scores[("openvino", "fp32")] - reference) < 0.01
    # the same QDQ model on two INT8 engines, which round their requantisation apart: 0.08 points measured on
    # this clip (NNCF's own quantisation was up to 5 points off FP32)
    assert abs(scores[("openvino", "int8")] - scores[("onnxruntime", "int8")]) < 0.25, scores
    (ov_int8,) = [a for a in read_bundle(out).manifest["artifacts"]
                  if (a["backend"], a["precision"]) == ("openvino", "int8")]
    assert ov_int8["export"]["quantizer"].startswith("onnxruntime"), ov_int8["export"]
    assert max(abs(s - reference) for s in scores.values()) < 1.0, scores


@pytest.fixture(scope="module")
def unseen_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight images no quantisation policy was tuned on (scikit-image colour and grey photos, and a frame of
    two videos): a held-out validation set."""
    import skimage.data

    folder = tmp_path_factory.mktemp("unseen")
    for name in ("immunohistochemistry", "hubble_deep_field", "retina", "brick", "coins", "moon"):
        image = getattr(skimage.data, name)()
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{name}.png"), bgr[:256, :256])
    for video in (BIKES, BUNNY):
        capture = cv2.VideoCapture(str(video))
        for _ in range(60):  # a frame two seconds in
            ok, frame = capture.read()
        capture.release()
        assert ok, video
        cv2.imwrite(str(folder / f"{video.stem}.png"), frame[:256, :256])
    return folder
