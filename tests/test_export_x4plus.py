"""The full-size realesrgan-x4plus to INT8 on ONNX Runtime and OpenVINO through ``kvqe-export``: its default
gates on photos held out from calibration and from every policy's tuning. The run's longest test, in a module of
its own so that it starts at once and the export toolchain's other tests run beside it."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from support import BIKES, BUNNY, cli, json_lines

from kvqe.export.latency import FASTER_BELOW

pytest.importorskip("openvino")
pytestmark = pytest.mark.e2e  # kvqe-export in a subprocess


@pytest.mark.slow
def test_x4plus_int8_on_both_backends_passes_its_default_gates(sr_photos: Path, unseen_photos: Path,
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
                 "--precision", "int8", "--calib", str(sr_photos), "--val", str(unseen_photos), "--calib-size", "16",
                 "--json")
    (summary,) = json_lines(result)
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
