"""The fast tier's counterparts of the ``e2e`` export tests: the same gates, exit codes and bundles, from tiny
models exported in this process (``tiny_rrdb``: RRDBNet with one RRDB of 8 features; ``tiny_vqa``: 1,553
parameters) instead of full-size ones through ``kvqe-export`` in a subprocess."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support import Exported, cli, export_in_process, psnr, tiny_rrdb_net

import kvqe
from kvqe.bundle import manifest_schema, read_bundle
from kvqe.calibration.data import SampleSettings
from kvqe.errors import BundleError
from kvqe.export.bundle_builder import exit_code


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four real photos (scikit-image), 128x128 crops: SR calibration and validation media."""
    import skimage.data

    folder = tmp_path_factory.mktemp("calib_tiny")
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        rgb = getattr(skimage.data, name)()
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)[:128, :128])
    return folder


def _export_rrdb(tiny_rrdb: Exported, out: Path, **options: object) -> dict:
    return export_in_process("realesrgan-x4plus", out, tiny_rrdb.checkpoint, tiny_rrdb_net, **options)


def _torch_x4(module: torch.nn.Module, bgr: np.ndarray) -> np.ndarray:
    rgb = np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / 255
    with torch.no_grad():
        out = module(torch.from_numpy(rgb)).clamp(0, 1).numpy()[0]
    return np.ascontiguousarray(np.rint(out * 255).astype(np.uint8).transpose(1, 2, 0)[:, :, ::-1])


def test_tiny_rrdb_bundle_enhances_as_torch_tiled_and_whole(tiny_rrdb: Exported, astronaut_bgr: np.ndarray) -> None:
    """Bundle loading and SR tiling on the x4plus architecture: the ONNX bundle equals the torch net it was
    exported from, whole and in tiles that do not divide the image."""
    bundle = read_bundle(tiny_rrdb.bundle)
    assert bundle.manifest["model"]["name"] == "realesrgan-x4plus"
    assert bundle.manifest["model"]["params"] == sum(p.numel() for p in tiny_rrdb_net().parameters()) == 14_083
    assert bundle.verify_all() and all(v is None for v in bundle.verify_all().values())
    image = np.ascontiguousarray(astronaut_bgr[150:200, 180:245])  # 50x65
    expected = _torch_x4(tiny_rrdb.torch_module(), image)
    assert 20 < float(expected.std()) and 0.5 < float(((expected > 0) & (expected < 255)).mean())  # not flat
    model = kvqe.load(tiny_rrdb.bundle)
    whole = model.enhance(image, tile=0)
    tiled = model.enhance(image, tile=24, tile_pad=10)
    assert whole.shape == tiled.shape == (200, 260, 3)
    assert int(np.abs(whole.astype(int) - expected).max()) <= 1
    assert psnr(tiled, whole) >= 45.0


def test_tiny_export_gate_above_reach_fails_the_release_but_keeps_the_artifact(
        tiny_rrdb: Exported, photo_dir: Path, tmp_path: Path) -> None:
    """test_export_toolchain's ``int8:psnr>=80`` gate (exit 3), on tiny RRDBNet through the Python API."""
    out = tmp_path / "strict"
    summary = _export_rrdb(tiny_rrdb, out, formats=("onnxruntime-int8",), calib=photo_dir,
                           samples=SampleSettings(calib_size=8), gates=("int8:psnr>=80",))
    assert exit_code(summary) == 3
    int8 = next(a for a in summary["artifacts"] if a["precision"] == "int8")
    assert int8["deployable"] is False and "short by" in int8["failures"][0]
    assert 10.0 < int8["metrics"]["psnr"] < 80.0
    fp32 = next(a for a in summary["artifacts"] if a["precision"] == "fp32")
    assert fp32["deployable"] is True and fp32["metrics"]["max_abs_diff_vs_torch"] <= 1e-4
    assert (out / int8["file"]).is_file()
    with pytest.raises(BundleError, match="deployable: false"):
        kvqe.load(out, precision="int8")
    assert kvqe.load(out, precision="int8", allow_undeployable=True).precision == "int8"
    cli("kvqe", "verify", str(out), check_code=3)


def test_tiny_export_without_tensorrt_exits_4_and_keeps_the_other_formats(tiny_rrdb: Exported,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "trt"
    summary = _export_rrdb(tiny_rrdb, out, formats=("onnx", "tensorrt"))
    assert exit_code(summary) == 4
    assert [u["format"] for u in summary["unavailable"]] == ["tensorrt"]
    assert [a.backend for a in read_bundle(out).artifacts] == ["onnxruntime"]


def test_tiny_export_every_float_artifact_passes_its_gate_and_runs_behind_one_call(
        tiny_rrdb: Exported, astronaut_bgr: np.ndarray, tmp_path: Path) -> None:
    """ONNX and OpenVINO at FP32 and FP16 from one request: each gated against the FP32 reference, each loaded
    and run by the same ``enhance`` call, ``kvqe verify`` reruns the gates, the manifest validates against the
    published schema."""
    pytest.importorskip("openvino")
    out = tmp_path / "all"
    summary = _export_rrdb(tiny_rrdb, out, formats=("onnx", "openvino"), precisions=("fp32", "fp16"))
    assert exit_code(summary) == 0
    built = {(a["backend"], a["precision"]): a for a in summary["artifacts"]}
    assert set(built) == {(b, p) for b in ("onnxruntime", "openvino") for p in ("fp32", "fp16")}
    assert all(a["deployable"] for a in built.values()), summary
    assert built[("onnxruntime", "fp16")]["metrics"]["psnr"] >= 45 and built[("openvino", "fp16")]["metrics"]["psnr"] >= 45
    image = np.ascontiguousarray(astronaut_bgr[200:232, 220:260])
    reference = kvqe.load(out, backend="onnxruntime", precision="fp32").enhance(image)
    for backend, precision in built:
        model = kvqe.load(out, backend=backend, precision=precision)
        assert (model.backend, model.precision) == (backend, precision)
        result = model.enhance(image)
        assert result.shape == (128, 160, 3)
        assert psnr(result, reference) >= 45
    records = [json.loads(line) for line in cli("kvqe", "verify", str(out), "--json", check_code=0).stdout.splitlines()]
    assert len(records) == 3 and all(r["passed"] for r in records)
    jsonschema.Draft202012Validator(manifest_schema()).validate(json.loads((out / "manifest.json").read_text()))
    assert all(a.extra_files for a in read_bundle(out).artifacts if a.backend == "openvino")


def test_export_cli_exit_codes_in_process(tiny_vqa: Exported, tmp_path: Path) -> None:
    """test_cli's and test_sinsr_pipeline's ``kvqe-export`` usage errors, through the click command in this
    process: exit 2, the reason on stderr, nothing written."""
    from kvqe.export.cli import main

    out = tmp_path / "b"

    def run(*args: str) -> str:
        result = CliRunner().invoke(main, [*args, "--out", str(out)])
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.stderr
        return result.stderr

    assert "unknown model" in run("no-such-model")
    assert "--weights model=" in run("vqa-sharpmind-swint")
    assert "does not match" in run("realesr-animevideov3", "--weights", f"model={tiny_vqa.checkpoint}")
    assert "unknown format" in run("realesr-animevideov3", "--formats", "onnx,coreml")
    assert "INT8 needs calibration data" in run("realesr-animevideov3", "--precision", "int8")
    assert "does not apply to a sr model" in run("realesr-animevideov3", "--gate", "srcc>=0.9")
    assert "cannot read gate" in run("realesr-animevideov3", "--gate", "psnr=>35")
    for given in ([], ["--weights", f"unet={tiny_vqa.checkpoint}"]):  # test_sinsr_pipeline's usage errors
        message = run("sinsr", *given)
        assert "SinSR_v1.pth" in message and "autoencoder_vq_f4.pth" in message
    assert "--out-scale must be one of 1, 2, 4" in run("sinsr+realesrgan", "--weights", "unet=a.pth", "--weights",
                                                        "vq=b.pth", "--out-scale", "3")
    assert "pipeline models" in run("realesr-animevideov3", "--out-scale", "1")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    listed = CliRunner().invoke(main, ["list", "--json"])
    assert listed.exit_code == 0
    names = {json.loads(line)["name"] for line in listed.stdout.splitlines() if line.strip()}
    assert {"vqa-sharpmind-swint", "realesrgan-x4plus", "realesr-animevideov3"} <= names
