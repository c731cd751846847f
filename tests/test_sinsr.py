"""SinSR (UNetModelSwin + VQ-f4): official layouts, goldens stage by stage and end to end, the three-graph
ONNX split with its numpy glue, the two-checkpoint loader and the card."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from support import fixture_weights, shared_fixture

from kvqe.errors import BadInputError
from kvqe.export.onnx_export import OnnxExportSpec, export_onnx, torch_reference, validate_onnx
from kvqe.models.flops import count_macs, count_params
from kvqe.models.registry import get_model
from kvqe.models.sinsr import SinSR, UNetModelSwin, VQModelTorch, build_sinsr, load_sinsr_weights
from kvqe.models.sinsr.one_step import bicubic_x4, pad_to_multiple
from kvqe.models.sinsr.split import norm_count, split_stages
from kvqe.models.sinsr.swin import relative_position_index, shifted_window_mask
from kvqe.models.sinsr.tiled import SharedNorms, TiledSinSR, run_tiled
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.runtimes.onnxruntime import OnnxRuntimeRunner
from kvqe.sdk.pipelines import sinsr_glue as glue
from kvqe.sdk.pipelines.sinsr_exact import combine_sums, run_tile_graph

ATOL = 1e-4
SAFE_GAP = 1e-4  # codes must match wherever the best and second-best codebook distances differ by more
STAGES = ("encoder", "denoiser", "decoder")
# golden array -> UNet submodule whose output it is (small golden; the full one has h_mid only)
UNET_INTERNALS = {
    "emb": "time_embed", "h_in0": "input_blocks.0", "h_in1_res": "input_blocks.1.0",
    "h_in1_swin0": "input_blocks.1.1.blocks.0", "h_in1_swin1": "input_blocks.1.1.blocks.1",
    "h_in1_swin_out": "input_blocks.1.1", "h_in10_swin_out": "input_blocks.10.1", "h_mid": "middle_block",
    "h_out11": "output_blocks.11",
}


def _json(name: str) -> Any:
    return json.loads(shared_fixture(f"sinsr/{name}").read_text())


def _golden(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(shared_fixture(f"sinsr/{name}")))


def _load_fixture_weights(net: torch.nn.Module, layout: str) -> None:
    """The fixtures' synthetic weights (seed 0); buffers stay the module's own."""
    state = fixture_weights().make_state_dict(_json(f"layout_{layout}.json"), seed=0)
    net.load_state_dict({**net.state_dict(), **{k: torch.from_numpy(v) for k, v in state.items()}}, strict=True)


def _sinsr(size: str) -> SinSR:
    configs = _json("configs.json")
    model = build_sinsr(configs[f"unet_{size}"]["kwargs"], configs[f"vq_{size}"]["kwargs"])
    _load_fixture_weights(model.unet, f"unet_{size}")
    _load_fixture_weights(model.vq, f"vq_{size}")
    return model


@pytest.fixture(scope="module")
def small() -> SinSR:
    return _sinsr("small")


def _max_diff(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def _assert_close(got: dict[str, torch.Tensor], golden: dict[str, np.ndarray]) -> None:
    diffs = {name: _max_diff(value, golden[name]) for name, value in got.items()}
    assert all(d <= ATOL for d in diffs.values()), diffs


def _assert_codes(model: SinSR, x0: torch.Tensor | np.ndarray, golden: dict[str, np.ndarray]) -> np.ndarray:
    """Codes of ``x0`` equal the golden ones wherever the golden gap is safe; returns the mismatch mask."""
    codes = model.vq.quantize.codes(torch.as_tensor(x0)).numpy()
    differ = codes != golden["codes"]
    assert not (differ & (golden["code_gap"] > SAFE_GAP)).any()
    return differ


class _Capture:
    """Forward outputs of named submodules of ``root`` while active."""

    def __init__(self, root: torch.nn.Module, paths: dict[str, str]) -> None:
        self.root, self.paths = root, paths
        self.outputs: dict[str, torch.Tensor] = {}

    def __enter__(self) -> dict[str, torch.Tensor]:
        def keep(name: str):
            return lambda module, args, out: self.outputs.__setitem__(name, out)

        self.handles = [self.root.get_submodule(path).register_forward_hook(keep(name))
                        for name, path in self.paths.items()]
        return self.outputs

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles:
            handle.remove()


# --- structure -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["unet_full", "vq_full", "unet_small", "vq_small"])
def test_state_dict_layout_is_the_official_one(name: str) -> None:
    kwargs = _json("configs.json")[name]["kwargs"]
    with torch.device("meta"):
        net = (UNetModelSwin if name.startswith("unet") else VQModelTorch)(**kwargs)
    params = {k for k, _ in net.named_parameters()}
    layout = {k: {"shape": list(v.shape), "kind": "param" if k in params else "buffer",
                  "dtype": str(v.dtype).removeprefix("torch.")} for k, v in net.state_dict().items()}
    want = _json(f"layout_{name}.json")
    assert list(layout) == list(want)
    assert layout == want
    expected = {"unet_full": 118_593_583, "vq_full": 55_322_782, "unet_small": 4_666_631, "vq_small": 3_496_510}
    assert count_params(net) == expected[name]


def test_recomputed_swin_masks_are_the_official_ones() -> None:
    masks = np.load(shared_fixture("sinsr/swin_masks.npz"))
    for key in masks.files:
        if key.startswith("mask_ws8_shift4_"):
            height, width = map(int, key.rsplit("_", 1)[1].split("x"))
            np.testing.assert_array_equal(shifted_window_mask(height, width, 8, 4).numpy(), masks[key], err_msg=key)
    np.testing.assert_array_equal(relative_position_index(8).numpy(), masks["relative_position_index_ws8"])


def test_glue_constants_follow_the_schedule() -> None:
    derived = _json("configs.json")["diffusion"]["derived"]
    t = derived["one_step_t"]
    assert glue.TIMESTEP == t and glue.KAPPA == derived["kappa"]
    assert glue.SQRT_ETA_T == derived["sqrt_etas_float64"][t] and glue.ETA_T == derived["etas_float64"][t]
    assert glue.NOISE_SCALE.dtype == glue.INPUT_SCALE.dtype == np.float32
    assert glue.NOISE_SCALE == np.float32(derived["kappa_times_sqrt_eta_T_as_float32"])
    assert glue.INPUT_SCALE == np.float32(derived["input_std_float32"])
    golden = _golden("golden_small.npz")
    assert glue.INPUT_SCALE == golden["input_scale_std_f32"]
    np.testing.assert_array_equal(glue.noise(golden["eps"].shape), golden["eps"])  # default seed = fixture's


def test_padding_matches_numpy_reflection_even_when_wider_than_the_image() -> None:
    lr = np.random.default_rng(0).uniform(0, 1, (1, 3, 20, 70)).astype(np.float32)
    padded = glue.prepare(lr)
    assert padded.shape == (1, 3, 64, 128)
    np.testing.assert_array_equal(pad_to_multiple((torch.from_numpy(lr) - 0.5) / 0.5).numpy(), padded)
    with pytest.raises(BadInputError, match="at least 2x2"):
        glue.prepare(lr[:, :, :1])


# --- goldens (small configs) ----------------------------------------------------------------------------

@pytest.mark.e2e  # the reduced SinSR in torch against goldens, every stage
@pytest.mark.parametrize("fixture", ["golden_small.npz", "golden_small_rect.npz"])
def test_small_stages_on_golden_inputs(small: SinSR, fixture: str) -> None:
    """Padding, bicubic, the UNet and its internals (where stored), codes and the decoder on the golden inputs.

    ``z_y`` (and ``x0_pred`` for rect) are checked end to end, where the encoder input equals ``y0_up`` exactly.
    """
    golden = _golden(fixture)
    t = {name: torch.from_numpy(value) for name, value in golden.items()}
    with torch.no_grad():
        got = {
            "y0": pad_to_multiple((t["lr"] - 0.5) / 0.5),
            "y0_up": bicubic_x4(t["y0"]),
            "dec": small.vq.decoder(small.vq.post_quant_conv(t["z_q"])),
        }
        if "h_mid" in golden:
            with _Capture(small.unet, UNET_INTERNALS) as captured:
                got["x0_pred"] = small.unet(t["unet_x"], t["t"], t["y0"])
            got.update(captured)
        assert not _assert_codes(small, golden["x0_pred"], golden).any()
    _assert_close(got, golden)
    np.testing.assert_array_equal(glue.prepare(golden["lr"]), golden["y0"])
    np.testing.assert_array_equal(glue.denoiser_input(golden["z_y"], golden["y0"], golden["eps"]), golden["unet_in"])


def _end_to_end(model: SinSR, golden: dict[str, np.ndarray]) -> None:
    """``SinSR.forward`` on the golden LR and noise: every float stage, codes where safe, and ``sr`` tightly
    when all codes match (otherwise only near-tie pixels may differ, with the README's bounded effect)."""
    paths = {"z_y": "vq.quant_conv", "x0_pred": "unet"}
    with torch.no_grad(), _Capture(model, paths) as captured:
        sr = model(torch.from_numpy(golden["lr"]), torch.from_numpy(golden["eps"]))
        differ = _assert_codes(model, captured["x0_pred"], golden)
    _assert_close(captured, golden)
    assert sr.shape == golden["sr"].shape
    assert _max_diff(sr, golden["sr"]) <= (ATOL if not differ.any() else 0.05)


@pytest.mark.e2e  # the reduced SinSR in torch against goldens, every stage
@pytest.mark.parametrize("fixture", ["golden_small.npz", "golden_small_rect.npz"])
def test_small_end_to_end(small: SinSR, fixture: str) -> None:
    _end_to_end(small, _golden(fixture))


# --- tiles with shared GroupNorm statistics (torch) --------------------------------------------------------

@pytest.mark.e2e  # the reduced SinSR's VQ run tile by tile in torch, one pass per GroupNorm
def test_tiles_with_shared_group_norm_statistics_are_exact(small: SinSR) -> None:
    """The high-resolution parts of the VQ over kept-centre tiles (16 LR pixels, 16 of context), their
    GroupNorms normalised with statistics gathered over all tiles one norm at a time: the untiled result up
    to float rounding. With each tile's own statistics the same tiles are far off."""
    vq = small.vq
    enc, dec = vq.encoder, vq.decoder

    def encoder_high(x: torch.Tensor) -> torch.Tensor:
        h = enc.conv_in(bicubic_x4(x))
        for level in enc.down:
            h = level(h)
        return h

    def decoder_high(h: torch.Tensor) -> torch.Tensor:
        for level in reversed(dec.up):
            h = level(h)
        return dec.conv_out(torch.nn.functional.silu(dec.norm_out(h)))

    y0 = torch.from_numpy(_golden("golden_small_rect.npz")["y0"][:, :, :24, :40])
    with torch.no_grad():
        for fn, x, factor, parts in ((encoder_high, y0, 1, [enc.down]),
                                     (decoder_high, torch.randn(1, 128, 24, 40, generator=torch.Generator().manual_seed(0)),
                                      glue.SCALE, [dec.up, dec.norm_out])):
            whole = fn(x)
            norms = SharedNorms(parts)
            with norms.installed():
                tiled = run_tiled(fn, x, factor, 16, 16, norms)
            assert len(norms.stats) == len(norms.norms) > 10
            assert _max_diff(tiled, whole.numpy()) <= ATOL
            assert _max_diff(run_tiled(fn, x, factor, 16, 16), whole.numpy()) > 0.1  # own statistics per tile
    assert all("forward" not in vars(norm) for norm in norms.norms)  # uninstalled


class _TorchTileRunner(Runner):
    """A tile graph's torch module behind the Runner protocol's ``infer`` (the runtime glue's view)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def _load(self) -> None: ...

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name, np.dtype(np.float32), (None, None, None, None)) for name in ("x", "stats", "mask"))

    def _output_specs(self) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(name, np.dtype(np.float32), (None, None, None, None)) for name in ("y", "sums"))

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        with torch.no_grad():
            y, sums = self.module(*(torch.from_numpy(feeds[k]) for k in ("x", "stats", "mask")))
        return {"y": y.numpy(), "sums": sums.numpy()}

    def _close(self) -> None: ...


@pytest.mark.e2e  # the reduced SinSR's VQ run tile by tile in torch, one pass per GroupNorm
def test_split_vq_graphs_tile_exactly_through_the_runtime_glue(small: SinSR) -> None:
    """The exportable split (:mod:`kvqe.models.sinsr.split`) driven by the runtime's numpy glue
    (:func:`kvqe.sdk.pipelines.sinsr_exact.run_tile_graph`: one statistics pass per norm from kept-region sums, Chan's
    formula): tiles of 16 LR pixels with 16 of context reproduce the untiled VQ encode and decode; the mid
    graphs are exactly the rest of them."""
    stages = split_stages(small)
    vq = small.vq
    y0 = _golden("golden_small_rect.npz")["y0"][:, :, :24, :40]
    x0 = torch.randn(1, 3, 24, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        whole_z = vq.encode(bicubic_x4(torch.from_numpy(y0))).numpy()
        whole_dec = vq.decode(x0).numpy()
        latent = stages["decoder_mid"](x0).numpy()
    for stage, x, factor, whole in (("encoder_high", y0, 1, None), ("decoder_high", latent, glue.SCALE, whole_dec)):
        runner = _TorchTileRunner(stages[stage]).load()
        norms = norm_count(small)[stage]
        out = np.zeros((1, 0, 24 * factor, 40 * factor), np.float32)
        for kept, y in run_tile_graph(runner, x, norms, factor, 16, 16):
            if out.shape[1] == 0:
                out = np.zeros((1, y.shape[1], 24 * factor, 40 * factor), np.float32)
            out[:, :, kept[0] * factor:kept[2] * factor, kept[1] * factor:kept[3] * factor] = y
        assert runner.calls == (norms + 1) * 6 and norms > 10  # 2 x 3 tiles, one pass per norm and the last
        if whole is None:  # the encoder: compare after the mid graph
            with torch.no_grad():
                out, whole = stages["encoder_mid"](torch.from_numpy(out)).numpy(), whole_z
        assert np.abs(out - whole).max() <= ATOL


def test_combine_sums_is_the_exact_mean_and_variance() -> None:
    rng = np.random.default_rng(0)
    data = [rng.normal(3.0, 2.0, (2, 4, n)) for n in (5, 17, 1)]
    parts = [np.stack([np.full((2, 4), d.shape[-1]), d.sum(-1), ((d - d.mean(-1, keepdims=True)) ** 2).sum(-1)], -1)
             for d in data]
    mean, var = combine_sums(parts)
    joined = np.concatenate(data, -1)
    np.testing.assert_allclose(mean, joined.mean(-1), rtol=1e-12)
    np.testing.assert_allclose(var, joined.var(-1), rtol=1e-12)


@pytest.mark.slow
def test_tiled_sinsr_matches_the_untiled_one_on_a_real_photo(small: SinSR, astronaut_bgr: np.ndarray) -> None:
    """:class:`TiledSinSR` (VQ tiles of 64 LR pixels with 16 of context and shared statistics, latent-size
    parts whole) against ``SinSR.forward`` on a 128x128 astronaut crop, the same noise. Measured: 91 dB on a
    192x192 crop (max diff 1 level, from float rounding at codebook near-ties)."""
    rgb = np.ascontiguousarray(astronaut_bgr[100:228, 150:278, ::-1].transpose(2, 0, 1)[None], np.float32) / 255
    lr = torch.from_numpy(rgb)
    eps = torch.from_numpy(glue.noise((1, 3, 128, 128)))
    with torch.no_grad():
        whole = small(lr, eps)
        tiled = TiledSinSR(small, tile=64, context=16)(lr, eps)

    def u8(x: torch.Tensor) -> np.ndarray:
        return np.rint(x.numpy() * 255).astype(np.float64)

    mse = float(np.mean((u8(tiled) - u8(whole)) ** 2))
    assert tiled.shape == whole.shape == (1, 3, 512, 512)
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40.0


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
def small_onnx(small: SinSR, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    yield _export(small, _golden("golden_small.npz"), tmp_path_factory.mktemp("sinsr_onnx"))


def _second_input(channels: int) -> np.ndarray:
    """Batch 2, non-square: exercises every dynamic axis."""
    return np.random.default_rng(0).uniform(-1, 1, (2, channels, 64, 128)).astype(np.float32)


def test_onnx_encoder_bicubic_is_exact_resize(small: SinSR, small_onnx: dict[str, Path]) -> None:
    (resize,) = [n for n in onnx.load(str(small_onnx["encoder"])).graph.node if n.op_type == "Resize"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert (attrs["mode"], attrs["coordinate_transformation_mode"], attrs["exclude_outside"]) == (
        b"cubic", b"half_pixel", 0)
    assert attrs["cubic_coeff_a"] == pytest.approx(-0.75)
    golden = _golden("golden_small.npz")
    spec = _spec(3)
    report = validate_onnx(small_onnx["encoder"], torch_reference(small.stages()["encoder"], spec),
                           [golden["y0"], _second_input(3)], spec, threads=2)
    assert report.max_abs_diff <= ATOL


def test_onnx_denoiser_matches_torch(small: SinSR, small_onnx: dict[str, Path]) -> None:
    golden, spec = _golden("golden_small.npz"), _spec(6)
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
    golden, spec = _golden("golden_small.npz"), _spec(3)
    with OnnxRuntimeRunner(small_onnx["decoder"], threads=2) as runner:
        assert _max_diff(runner.run_single(golden["x0_pred"]), golden["dec"]) <= ATOL  # small: no code flips
    report = validate_onnx(small_onnx["decoder"], torch_reference(small.stages()["decoder"], spec),
                           [_codebook_input(small, (2, 3, 64, 128))], spec, threads=2)
    assert report.max_abs_diff <= ATOL
    ops = {n.op_type for n in onnx.load(str(small_onnx["decoder"])).graph.node}
    assert "Scan" in ops  # attention and quantizer stay chunked in the graph


def test_glue_and_three_onnx_sessions_reproduce_the_golden(small_onnx: dict[str, Path]) -> None:
    golden = _golden("golden_small.npz")
    runners = [OnnxRuntimeRunner(small_onnx[name], threads=2).load() for name in STAGES]
    try:
        sr = glue.one_step(golden["lr"], *(runner.run_single for runner in runners), eps=golden["eps"])
        assert _max_diff(sr, golden["sr"]) <= ATOL
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
    configs = _json("configs.json")
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
    assert (card.task, card.weight_parts, card.output["scale"], card.input["multiple_of"]) == (
        "sr", ("unet", "vq"), 4, 64)
    assert "never bundled" in card.licence
    with torch.device("meta"):
        model = entry.factory()
    assert count_params(model) == card.params == 118_593_583 + 55_322_782
    assert round(count_macs(model, torch.zeros(card.extra["flops_input_shape"])) / 1e9, 2) == card.gflops


# --- full configs (slow) -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full() -> SinSR:
    return _sinsr("full")


@pytest.mark.slow
def test_full_end_to_end(full: SinSR) -> None:
    golden = _golden("golden_full_unet.npz")
    with torch.no_grad(), _Capture(full.unet, {"h_mid": "middle_block", "emb": "time_embed"}) as captured:
        full.unet(torch.from_numpy(golden["unet_x"]), torch.from_numpy(golden["t"]), torch.from_numpy(golden["y0"]))
    _assert_close(captured, golden)
    _end_to_end(full, golden)


@pytest.mark.slow
def test_full_denoiser_onnx_matches_torch(full: SinSR, tmp_path: Path) -> None:
    golden, spec = _golden("golden_full_unet.npz"), _spec(6)
    path = _export(full, golden, tmp_path, ("denoiser",))["denoiser"]
    report = validate_onnx(path, torch_reference(full.stages()["denoiser"], spec),
                           [golden["unet_in"], _second_input(6)[:1]], spec, threads=2)
    assert report.max_abs_diff <= ATOL
    with OnnxRuntimeRunner(path, threads=2) as runner:
        assert _max_diff(runner.run_single(golden["unet_in"]), golden["x0_pred"]) <= ATOL


@pytest.mark.slow
def test_full_vq_stages_onnx_match_torch(full: SinSR, tmp_path: Path) -> None:
    """The full VQ-f4 encoder and decoder graphs against torch: the golden's y0 and a batch-2 non-square
    input for the encoder; for the decoder the golden's dequantised latent (its codes are the golden's) and
    codebook rows without argmin near-ties, and the golden decoder output."""
    golden = _golden("golden_full_unet.npz")
    paths = _export(full, golden, tmp_path, ("encoder", "decoder"))
    encoder = validate_onnx(paths["encoder"], torch_reference(full.stages()["encoder"], _spec(3)),
                            [golden["y0"], _second_input(3)], _spec(3), threads=2)
    assert encoder.max_abs_diff <= ATOL
    decoder = validate_onnx(paths["decoder"], torch_reference(full.stages()["decoder"], _spec(3)),
                            [golden["z_q"], _codebook_input(full, (2, 3, 32, 48))], _spec(3), threads=2)
    assert decoder.max_abs_diff <= ATOL
    with OnnxRuntimeRunner(paths["decoder"], threads=2) as runner:
        assert _max_diff(runner.run_single(golden["z_q"]), golden["dec"]) <= ATOL
