"""The VQA students through ``kvqe-export`` in every format and precision on real clips: the Swin-T student
(vqa-sharpmind-swint) and the shipped distilled student (vqa-student) pass their default gates, and every
artifact scores a real video as FP32 does."""
from __future__ import annotations

from pathlib import Path

import pytest
from support import BIKES, BUNNY, CARPHONE, EVERY_FORMAT, cli, json_lines, make_clip, needs_ffmpeg

import kvqe
from kvqe.bundle import read_bundle

pytest.importorskip("openvino")
pytestmark = pytest.mark.e2e  # kvqe-export in a subprocess


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




@needs_ffmpeg
@pytest.mark.slow
def test_vqa_student_all_formats_pass_default_gates(video_dir: Path, student_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "vqa-all"
    (summary,) = json_lines(cli("kvqe-export", "vqa-sharpmind-swint", "--weights", f"model={student_checkpoint}",
                                "--out", str(out), *EVERY_FORMAT, "--calib", str(video_dir),
                                "--score-range=-1000,1000", "--json", check_code=0))
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
    (summary,) = json_lines(cli("kvqe-export", "vqa-student", "--weights", f"model={checkpoint}", "--out", str(out),
                                *EVERY_FORMAT, "--calib", str(video_dir), "--val", str(held_out_clips), "--json",
                                check_code=0))
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


