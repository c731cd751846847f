"""SinSR (UNetModelSwin + VQ-f4) exported: the three-graph ONNX split with its numpy glue, the two-checkpoint
loader, the card, and the full-size configs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from sinsr_fixtures import (
    ATOL,
    STAGES,
    Capture,
    assert_close,
    end_to_end,
    fixture_json,
    fixture_sinsr,
    load_golden,
    max_diff,
)

from kvqe.errors import BadInputError
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.models.flops import count_macs, count_params
from kvqe.models.registry import get_model
from kvqe.models.sinsr import SinSR, build_sinsr, load_sinsr_weights
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
from kvqe.sdk.pipelines import sinsr_glue as glue


@pytest.fixture(scope="module")
def small() -> SinSR:
    return fixture_sinsr("small")


# --- ONNX: three graphs and the numpy glue ----------------------------------------------------------------

def _spec(channels: int) -> OnnxExportSpec:
    return OnnxExportSpec(opset=18, tolerance=ATOL, dynamic_axes={0: "batch", 2: "height", 3: "width"},
                          dynamic_output_axes=(0, 2, 3), input_shape=(None, channels, None, None))


STAGE_CHANNELS = {"encoder": 3, "denoiser": 6, "decoder": 3}


def _export(model: SinSR, golden: dict[str, np.ndarray], out: Path, names: tuple[str, ...] = STAGES) -> dict[str, Path]:
    examples = {"encoder": golden["y0"], "denoiser": golden["unet_in"], "decoder": golden["x0_pred"]}
    paths = {}
    for name in names:
        paths[name] = out / f"{name}.onnx"
        export_onnx(model.stages()[name], _spec(STAGE_CHANNELS[name]), examples[name], paths[name])
    return paths


@pytest.fixture(scope="module")
def small_onnx(sinsr_bundle) -> dict[str, Path]:
    """The three FP32 stage graphs of the reduced SinSR as ``kvqe-export`` writes them (``sinsr_bundle``: the
    same nets and weights as ``small``), exported once per run."""
    out, _ = sinsr_bundle
    return {name: out / f"{name}.fp32.onnx" for name in STAGES}


def _second_input(channels: int) -> np.ndarray:
    """Batch 2, non-square: exercises every dynamic axis."""
    return np.random.default_rng(0).uniform(-1, 1, (2, channels, 64, 128)).astype(np.float32)


def test_onnx_encoder_bicubic_is_exact_resize(small: SinSR, small_onnx: dict[str, Path]) -> None:
    (resize,) = [n for n in onnx.load(str(small_onnx["encoder"])).graph.node if n.op_type == "Resize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert (attrs["mode"], attrs["coordinate_transformation_mode"], attrs["exclude_outside"]) == (
        b"cubic", b"half_pixel", 0)
    assert attrs["cubic_coeff_a"] == pytest.approx(-0.75)
    golden = load_golden("golden_small.npz")
    spec = _spec(3)
    report = validate_onnx(small_onnx["encoder"], torch_reference(small.stages()["encoder"], spec),
                           [golden["y0"], _second_input(3)], spec, threads=2)
    assert report.max_abs_diff <= ATOL


def test_onnx_denoiser_matches_torch(small: SinSR, small_onnx: dict[str, Path]) -> None:
    golden, spec = load_golden("golden_small.npz"), _spec(6)
    report = validate_onnx(small_onnx["denoiser"], torch_reference(small.stages()["denoiser"], spec),
                           [golden["unet_in"], _second_input(6)], spec, threads=2)
    assert report.max_abs_diff <= ATOL


def _codebook_input(model: SinSR, shape: tuple[int, int, int, int]) -> np.ndarray:
    """Latents made of codebook rows whose nearest other row is far: no argmin near-ties."""
    codebook = model.vq.quantize.embedding.weight.detach().double()
    nearest = torch.cat([torch.cdist(part, codebook).topk(2, largest=False).values[:, 1]
                         for part in codebook.split(1024)])
    isolated = torch.nonzero(nearest**2 > 1e-2).squeeze(1).numpy()
    batch, channels, height, width = shape
    picks = np.random.default_rng(1).choice(isolated, size=batch * height * width)
    rows = codebook.float().numpy()[picks]
    return np.ascontiguousarray(rows.reshape(batch, height, width, channels).transpose(0, 3, 1, 2))


def test_onnx_decoder_matches_torch_and_golden(small: SinSR, small_onnx: dict[str, Path]) -> None:
    golden, spec = load_golden("golden_small.npz"), _spec(3)
    with OnnxRuntimeRunner(small_onnx["decoder"], threads=2) as runner:
        assert max_diff(runner.run_single(golden["x0_pred"]), golden["dec"]) <= ATOL  # small: no code flips
    report = validate_onnx(small_onnx["decoder"], torch_reference(small.stages()["decoder"], spec),
                           [_codebook_input(small, (2, 3, 64, 128))], spec, threads=2)
    assert report.max_abs_diff <= ATOL
    ops = {n.op_type for n in onnx.load(str(small_onnx["decoder"])).graph.node}
    assert "Scan" in ops  # attention and quantizer stay chunked in the graph


def test_glue_and_three_onnx_sessions_reproduce_the_golden(small_onnx: dict[str, Path]) -> None:
    golden = load_golden("golden_small.npz")
    runners = [OnnxRuntimeRunner(small_onnx[name], threads=2).load() for name in STAGES]
    try:
        sr = glue.one_step(golden["lr"], *(runner.run_single for runner in runners), eps=golden["eps"])
        assert max_diff(sr, golden["sr"]) <= ATOL
    finally:
        for runner in runners:
            runner.close()


# --- loader and card ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_checkpoints(small: SinSR, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small nets saved as a user would find them: unet wrapped in ``state_dict`` with ``module.``."""
    out = tmp_path_factory.mktemp("sinsr_ckpt")
    paths = {"unet": out / "SinSR_v1.pth", "vq": out / "autoencoder_vq_f4.pth"}
    torch.save({"state_dict": {f"module.{k}": v for k, v in small.unet.state_dict().items()}}, paths["unet"])
    torch.save(small.vq.state_dict(), paths["vq"])
    return paths


def test_loader_reads_wrapped_and_prefixed_checkpoints(small: SinSR, small_checkpoints: dict[str, Path]) -> None:
    fresh = _empty_small()
    facts = load_sinsr_weights(fresh, small_checkpoints)
    assert set(facts["files"]) == {"unet", "vq"} and "SinSR_v1.pth" in facts["source"]
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in small.state_dict().items())


def _empty_small() -> SinSR:
    configs = fixture_json("configs.json")
    return build_sinsr(configs["unet_small"]["kwargs"], configs["vq_small"]["kwargs"])


@pytest.mark.parametrize("parts", [{}, {"unet"}, {"vq"}])
def test_loader_names_both_checkpoints_when_one_is_missing(small_checkpoints: dict[str, Path], parts: set) -> None:
    given = {part: small_checkpoints[part] for part in parts}
    with pytest.raises(BadInputError, match=r"--weights unet=SinSR_v1\.pth --weights vq=autoencoder_vq_f4\.pth"):
        load_sinsr_weights(_empty_small(), given)


def test_loader_rejects_a_wrong_layout(small_checkpoints: dict[str, Path]) -> None:
    swapped = {"unet": small_checkpoints["vq"], "vq": small_checkpoints["unet"]}
    with pytest.raises(BadInputError, match="does not match UNetModelSwin"):
        load_sinsr_weights(_empty_small(), swapped)


def test_card_matches_the_counter() -> None:
    import kvqe.models.sinsr  # noqa: F401  (registers sinsr)

    entry = get_model("sinsr")
    card = entry.card
    assert (card.task, card.weight_parts, card.output.scale, card.input.multiple_of) == (
        "sr", ("unet", "vq"), 4, 64)
    assert "never bundled" in card.licence
    with torch.device("meta"):
        model = entry.factory()
    assert count_params(model) == card.params == 118_593_583 + 55_322_782
    assert round(count_macs(model, torch.zeros(card.extra["flops_input_shape"])) / 1e9, 2) == card.gflops


# --- full configs (slow) -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full() -> SinSR:
    return fixture_sinsr("full")


@pytest.mark.slow
def test_full_end_to_end(full: SinSR) -> None:
    golden = load_golden("golden_full_unet.npz")
    with torch.no_grad(), Capture(full.unet, {"h_mid": "middle_block", "emb": "time_embed"}) as captured:
        full.unet(torch.from_numpy(golden["unet_x"]), torch.from_numpy(golden["t"]), torch.from_numpy(golden["y0"]))
    assert_close(captured, golden)
    end_to_end(full, golden)


@pytest.mark.slow
def test_full_denoiser_onnx_matches_torch(full: SinSR, tmp_path: Path) -> None:
    golden, spec = load_golden("golden_full_unet.npz"), _spec(6)
    path = _export(full, golden, tmp_path, ("denoiser",))["denoiser"]
    report = validate_onnx(path, torch_reference(full.stages()["denoiser"], spec),
                           [golden["unet_in"], _second_input(6)[:1]], spec, threads=2)
    assert report.max_abs_diff <= ATOL
    with OnnxRuntimeRunner(path, threads=2) as runner:
        assert max_diff(runner.run_single(golden["unet_in"]), golden["x0_pred"]) <= ATOL


@pytest.mark.slow
def test_full_vq_stages_onnx_match_torch(full: SinSR, tmp_path: Path) -> None:
    """The full VQ-f4 encoder and decoder graphs against torch: the golden's y0 and a batch-2 non-square
    input for the encoder; for the decoder the golden's dequantised latent (its codes are the golden's) and
    codebook rows without argmin near-ties, and the golden decoder output."""
    golden = load_golden("golden_full_unet.npz")
    paths = _export(full, golden, tmp_path, ("encoder", "decoder"))
    encoder = validate_onnx(paths["encoder"], torch_reference(full.stages()["encoder"], _spec(3)),
                            [golden["y0"], _second_input(3)], _spec(3), threads=2)
    assert encoder.max_abs_diff <= ATOL
    decoder = validate_onnx(paths["decoder"], torch_reference(full.stages()["decoder"], _spec(3)),
                            [golden["z_q"], _codebook_input(full, (2, 3, 32, 48))], _spec(3), threads=2)
    assert decoder.max_abs_diff <= ATOL
    with OnnxRuntimeRunner(paths["decoder"], threads=2) as runner:
        assert max_diff(runner.run_single(golden["z_q"]), golden["dec"]) <= ATOL
