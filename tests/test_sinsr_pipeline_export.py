"""SinSR's export as a pipeline: usage errors, ``sinsr+realesrgan`` (restore then SinSR) and the INT8 denoiser,
with the reduced SinSR standing in for the real checkpoints (conftest.py's ``sinsr_bundle``) and the tiny one
where a test exports its own bundle."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from sinsr_fixtures import (
    EXACT_STAGES,
    PIPELINE_STAGES,
    export_small,
    rgb01,
    save_tiny_checkpoints,
    to_bgr,
    torch_sr,
)
from support import cli, psnr

import kvqe
from kvqe.bundle import read_bundle
from kvqe.export.bundle_builder import exit_code
from kvqe.models.sinsr import RestoredSinSR, SinSR, tiny_sinsr
from kvqe.models.sinsr.split import norm_count
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.sdk.pipelines.sinsr import RestoreThenSinSR, box_downscale
from kvqe.sdk.tiling import TileSettings, enhance_tiled

# --- export: usage errors ---------------------------------------------------------------------------------------

@pytest.mark.e2e  # kvqe-export subprocesses (fast tier: test_tiny_models.py, in-process)
@pytest.mark.parametrize("given", [(), ("unet",)])
def test_missing_checkpoints_exit_2_naming_both_files(sinsr_checkpoints: dict[str, Path], tmp_path: Path,
                                                      given: tuple[str, ...]) -> None:
    weights = [arg for part in given for arg in ("--weights", f"{part}={sinsr_checkpoints[part]}")]
    result = cli("kvqe-export", "sinsr", "--out", str(tmp_path / "b"), *weights, check_code=2)
    assert b"SinSR_v1.pth" in result.stderr and b"autoencoder_vq_f4.pth" in result.stderr
    assert not (tmp_path / "b").exists()


@pytest.mark.e2e  # kvqe-export subprocesses (fast tier: test_tiny_models.py, in-process)
def test_out_scale_is_checked(tmp_path: Path) -> None:
    result = cli("kvqe-export", "sinsr+realesrgan", "--out", str(tmp_path / "b"), "--weights", "unet=a.pth",
                 "--weights", "vq=b.pth", "--out-scale", "3", check_code=2)
    assert b"--out-scale must be one of 1, 2, 4" in result.stderr
    result = cli("kvqe-export", "realesr-animevideov3", "--out", str(tmp_path / "c"), "--out-scale", "1", check_code=2)
    assert b"pipeline models" in result.stderr


# --- sinsr+realesrgan ----------------------------------------------------------------------------------------------

def test_restore_then_sinsr_runner_matches_torch(sinsr_bundle, sinsr_small: SinSR, coffee_bgr: np.ndarray) -> None:
    """The runtime composite on real graphs (the embedded realesr-animevideov3 as the restore stage, the small
    SinSR stages): x4 and x1 (enhancement in place) against the torch ``RestoredSinSR`` with the same noise."""
    from kvqe.models.registry import get_model
    from kvqe.runtimes import create_runner

    out, _ = sinsr_bundle
    restore = get_model("realesr-animevideov3")
    net = restore.factory().eval()
    restore.load_weights(net, {})
    image = np.ascontiguousarray(coffee_bgr[150:198, 250:298])  # 48x48
    lr = rgb01(image)
    for scale in (4, 1):
        runner = RestoreThenSinSR(create_runner("onnxruntime", embedded_bundle_path("sr") / "model.fp32.onnx"),
                                  *(create_runner("onnxruntime", out / f"{s}.fp32.onnx") for s in PIPELINE_STAGES),
                                  out_scale=scale)
        with runner:
            got = to_bgr(runner.run_single(lr))
        reference = torch_sr(RestoredSinSR(net, sinsr_small, out_scale=scale), image)
        assert got.shape == reference.shape == (48 * scale, 48 * scale, 3)
        assert psnr(got, reference) >= 40.0
    np.testing.assert_allclose(box_downscale(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4), 2)[0, 0],
                               [[2.5, 4.5], [10.5, 12.5]])


def test_restore_then_sinsr_tiles_exactly(sinsr_bundle, coffee_bgr: np.ndarray) -> None:
    """The composite's own tiling through the runtime graphs (embedded realesr-animevideov3, the small SinSR
    stages and their split VQ graphs): restore on kept-centre tiles, SinSR's exact tiles, vs the untiled
    ``run``; 2 tiles of 64 LR pixels with 32 of context on a 64x128 crop of a real photo."""
    from kvqe.runtimes import create_runner

    out, _ = sinsr_bundle
    norms = read_bundle(out).pipeline["exact_tiling"]["norms"]
    lr = rgb01(np.ascontiguousarray(coffee_bgr[150:214, 250:378]))
    with RestoreThenSinSR(create_runner("onnxruntime", embedded_bundle_path("sr") / "model.fp32.onnx"),
                          *(create_runner("onnxruntime", out / f"{s}.fp32.onnx") for s in PIPELINE_STAGES),
                          exact={s: create_runner("onnxruntime", out / f"{s}.fp32.onnx") for s in EXACT_STAGES},
                          norms=norms) as runner:
        assert runner.tiles_exactly and next(iter(runner.stages)) == "restore"
        whole = runner.run_single(lr)
        tiled = runner.run_exact_whole(lr, 64, 32)
        naive = enhance_tiled(lr[0], runner.run_single, 4, TileSettings(64, 32), lambda x: to_bgr(x[None]),
                              run_at=lambda patch, origin: runner.run_at(patch, origin))  # tiles run alone
    assert tiled.shape == whole.shape == (1, 3, 256, 512)
    assert psnr(to_bgr(tiled), to_bgr(whole)) >= 40.0
    assert float(np.abs(tiled - whole).max()) < 1e-3
    assert psnr(naive, to_bgr(whole)) < 30.0  # global GroupNorm statistics: independent tiles do not match


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return save_tiny_checkpoints(tmp_path_factory.mktemp("tiny_sinsr"))


@pytest.mark.slow  # an export of the tiny SinSR (2-3 minutes)
def test_sinsr_realesrgan_bundle_at_out_scale_1(tiny_checkpoints: dict[str, Path], tmp_path: Path,
                                               coffee_bgr: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    """``sinsr+realesrgan`` exported with ``out_scale=1`` (enhancement in place, the option a default export
    does not take), on the tiny SinSR (every stage and split graph of the real one, exported in seconds): the
    manifest's facts, nothing on stdout, and the bundle loads and enhances. The composite's x4 and x1 runs against torch and its
    exact tiles on a real photo are proven on the reduced nets' graphs (test_restore_then_sinsr_runner_matches_torch,
    test_restore_then_sinsr_tiles_exactly)."""
    out = tmp_path / "pipeline-x1"
    summary = export_small("sinsr+realesrgan", out, tiny_checkpoints, tiny_sinsr, out_scale=1)
    assert exit_code(summary) == 0
    assert capsys.readouterr().out == ""  # no exporter chatter where kvqe-export --json writes its records
    bundle = read_bundle(out)
    assert bundle.output_spec.scale == bundle.pipeline["out_scale"] == 1
    assert bundle.pipeline["restore_model"] == "realesr-animevideov3"
    assert "BSD-3-Clause" in bundle.manifest["licence"] and "never bundled" in bundle.manifest["licence"]
    assert any("area-resized" in step for step in bundle.pipeline["glue"])
    assert bundle.stages == ("restore", *PIPELINE_STAGES, *EXACT_STAGES)
    assert bundle.pipeline["exact_tiling"]["norms"] == norm_count(tiny_sinsr())
    model = kvqe.load(out)
    image = np.ascontiguousarray(coffee_bgr[100:180, 200:300])  # 80x100
    assert model.scale == 1 and isinstance(model.runner, RestoreThenSinSR) and model.runner.tiles_exactly
    assert model.enhance(image).shape == (80, 100, 3)


# --- INT8 --------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # the tiny SinSR with INT8 calibration and whole-pipeline gates (5-10 minutes)
def test_int8_denoiser_is_attempted_and_its_psnr_reported(tiny_checkpoints: dict[str, Path], tmp_path: Path) -> None:
    """INT8 for the denoiser (the VQ encoder/decoder stay FP32) of the tiny SinSR, calibrated on inputs the FP32
    stages make from real photo crops; the gate (PSNR >= 35 dB vs the FP32 pipeline) decides, and the figure is
    reported either way (no search: ``search_budget=0``, the verdict is the point)."""
    import skimage.data

    calib = tmp_path / "calib"
    calib.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        cv2.imwrite(str(calib / f"{name}.png"), cv2.cvtColor(getattr(skimage.data, name)(), cv2.COLOR_RGB2BGR)[:160, :160])
    out = tmp_path / "int8"
    summary = export_small("sinsr", out, tiny_checkpoints, tiny_sinsr, formats=("onnxruntime-int8",),
                           precisions=("fp32",), calib=calib, search_budget=0)
    (config,) = [c for c in summary["pipeline"] if c["precision"] == "int8"]
    assert config["stages"] == {"encoder": "encoder.fp32.onnx", "denoiser": "denoiser.int8.onnx",
                                "decoder": "decoder.fp32.onnx", **{s: f"{s}.fp32.onnx" for s in EXACT_STAGES}}
    psnr_value = config["metrics"]["psnr"]
    assert np.isfinite(psnr_value)
    assert config["deployable"] == (psnr_value >= 35.0 and config["metrics"]["psnr_min"] >= 30.0)
    assert exit_code(summary) == (0 if config["deployable"] else 3)
    bundle = read_bundle(out)
    (int8,) = [a for a in bundle.artifacts if a.precision == "int8"]
    assert int8.stage == "denoiser" and int8.deployable == config["deployable"]
    assert int8.record["policy"]["name"] == "swin-unet-vq" and int8.record["calibration"]["calibration"]["samples"] > 0
    assert bundle.pipeline["precisions"] == {"int8": {"encoder": "fp32", "decoder": "fp32",
                                                      **{s: "fp32" for s in EXACT_STAGES}}}
    model = kvqe.load(out, precision="int8", allow_undeployable=True)
    assert model.precision == "int8" and model.stages["encoder"].precision == "fp32"
