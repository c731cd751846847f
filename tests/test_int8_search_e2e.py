"""INT8 that holds on content it was not calibrated or searched on, with the shipped models: the distilled
student on clips of a video its calibration never saw (``--val``), through ``kvqe-export``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import BIKES, BUNNY, CARPHONE, VIDEOS, cli, make_clip, needs_ffmpeg

pytest.importorskip("openvino")
STUDENT = Path(__file__).resolve().parents[1] / "assets" / "vqa-student.pth"


@needs_ffmpeg
@pytest.mark.slow
def test_student_int8_keeps_its_ranking_on_clips_of_unseen_content(tmp_path: Path) -> None:
    """Calibrated on bikes and Big Buck Bunny, judged on eight clips of carphone (pristine and distorted, four
    x264 qualities) that neither calibration nor any search saw: SROCC and PLCC >= 0.98 against FP32."""
    calib, held_out = tmp_path / "calib", tmp_path / "held_out"
    calib.mkdir()
    held_out.mkdir()
    for i, (source, size) in enumerate([(BIKES, (320, 136)), (BUNNY, (320, 180))] * 3):
        make_clip(calib, source, frames=30, size=size, fps=15, name=f"calib{i}.mp4", crf=(20, 32, 44)[i // 2])
    for i, source in enumerate([CARPHONE, VIDEOS / "carphone_distorted.mp4"] * 4):
        make_clip(held_out, source, frames=30, size=(176, 144), fps=15, name=f"val{i}.mp4", crf=(18, 30, 40, 48)[i // 2])
    out = tmp_path / "student-int8"
    result = cli("kvqe-export", "vqa-student", "--weights", f"model={STUDENT}", "--out", str(out),
                 "--formats", "onnxruntime-int8,openvino", "--precision", "int8", "--calib", str(calib),
                 "--val", str(held_out), "--json", check_code=0)
    summary = json.loads(result.stdout.decode().splitlines()[-1])
    manifest = json.loads((out / "manifest.json").read_text())
    int8 = [a for a in manifest["artifacts"] if a["precision"] == "int8"]
    assert {a["backend"] for a in int8} == {"onnxruntime", "openvino"}
    for artifact in int8:
        metrics = artifact["accuracy"]["metrics"]
        assert artifact["deployable"] and metrics["srocc"] >= 0.98 and metrics["plcc"] >= 0.98, metrics
        assert metrics["unit"] == "8 videos"
        validation = artifact["calibration"]["validation"]
        assert validation["from"].startswith("--val") and len(validation["sources"]) == 8
        assert not set(validation["sources"]) & set(artifact["calibration"]["calibration"]["sources"])
        assert artifact["mixed_precision"]["passed"] and artifact["latency"]["fp32_ms"] > 0
    assert all(a["deployable"] for a in summary["artifacts"])
