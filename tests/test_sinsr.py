"""SinSR (UNetModelSwin + VQ-f4) in torch: official layouts, goldens stage by stage and end to end, and tiles with
shared GroupNorm statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sinsr_fixtures import (
    ATOL,
    UNET_INTERNALS,
    Capture,
    assert_close,
    assert_codes,
    end_to_end,
    fixture_json,
    fixture_sinsr,
    load_golden,
    max_diff,
)
from support import shared_fixture

from kvqe.errors import BadInputError
from kvqe.models.flops import count_params
from kvqe.models.sinsr import SinSR, UNetModelSwin, VQModelTorch
from kvqe.models.sinsr.one_step import bicubic_x4, pad_to_multiple
from kvqe.models.sinsr.split import norm_count, split_stages
from kvqe.models.sinsr.swin import relative_position_index, shifted_window_mask
from kvqe.models.sinsr.tiled import SharedNorms, TiledSinSR, run_tiled
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.sdk.pipelines import sinsr_glue as glue
from kvqe.sdk.pipelines.sinsr_exact import combine_sums, run_tile_graph


@pytest.fixture(scope="module")
def small() -> SinSR:
    return fixture_sinsr("small")


# --- structure -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["unet_full", "vq_full", "unet_small", "vq_small"])
def test_state_dict_layout_is_the_official_one(name: str) -> None:
    kwargs = fixture_json("configs.json")[name]["kwargs"]
    with torch.device("meta"):
        net = (UNetModelSwin if name.startswith("unet") else VQModelTorch)(**kwargs)
    params = {k for k, _ in net.named_parameters()}
    layout = {k: {"shape": list(v.shape), "kind": "param" if k in params else "buffer",
                  "dtype": str(v.dtype).removeprefix("torch.")} for k, v in net.state_dict().items()}
    want = fixture_json(f"layout_{name}.json")
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
    derived = fixture_json("configs.json")["diffusion"]["derived"]
    t = derived["one_step_t"]
    assert glue.TIMESTEP == t and glue.KAPPA == derived["kappa"]
    assert glue.SQRT_ETA_T == derived["sqrt_etas_float64"][t] and glue.ETA_T == derived["etas_float64"][t]
    assert glue.NOISE_SCALE.dtype == glue.INPUT_SCALE.dtype == np.float32
    assert glue.NOISE_SCALE == np.float32(derived["kappa_times_sqrt_eta_T_as_float32"])
    assert glue.INPUT_SCALE == np.float32(derived["input_std_float32"])
    golden = load_golden("golden_small.npz")
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
    golden = load_golden(fixture)
    t = {name: torch.from_numpy(value) for name, value in golden.items()}
    with torch.no_grad():
        got = {
            "y0": pad_to_multiple((t["lr"] - 0.5) / 0.5),
            "y0_up": bicubic_x4(t["y0"]),
            "dec": small.vq.decoder(small.vq.post_quant_conv(t["z_q"])),
        }
        if "h_mid" in golden:
            with Capture(small.unet, UNET_INTERNALS) as captured:
                got["x0_pred"] = small.unet(t["unet_x"], t["t"], t["y0"])
            got.update(captured)
        assert not assert_codes(small, golden["x0_pred"], golden).any()
    assert_close(got, golden)
    np.testing.assert_array_equal(glue.prepare(golden["lr"]), golden["y0"])
    np.testing.assert_array_equal(glue.denoiser_input(golden["z_y"], golden["y0"], golden["eps"]), golden["unet_in"])


@pytest.mark.e2e  # the reduced SinSR in torch against goldens, every stage
@pytest.mark.parametrize("fixture", ["golden_small.npz", "golden_small_rect.npz"])
def test_small_end_to_end(small: SinSR, fixture: str) -> None:
    end_to_end(small, load_golden(fixture))


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

    y0 = torch.from_numpy(load_golden("golden_small_rect.npz")["y0"][:, :, :24, :40])
    with torch.no_grad():
        for fn, x, factor, parts in ((encoder_high, y0, 1, [enc.down]),
                                     (decoder_high, torch.randn(1, 128, 24, 40, generator=torch.Generator().manual_seed(0)),
                                      glue.SCALE, [dec.up, dec.norm_out])):
            whole = fn(x)
            norms = SharedNorms(parts)
            with norms.installed():
                tiled = run_tiled(fn, x, factor, 16, 16, norms)
            assert len(norms.stats) == len(norms.norms) > 10
            assert max_diff(tiled, whole.numpy()) <= ATOL
            assert max_diff(run_tiled(fn, x, factor, 16, 16), whole.numpy()) > 0.1  # own statistics per tile
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
    y0 = load_golden("golden_small_rect.npz")["y0"][:, :, :24, :40]
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
    parts whole) against ``SinSR.forward`` on a 64x128 astronaut crop (two tiles), the same noise. Measured:
    91 dB on a 192x192 crop (max diff 1 level, from float rounding at codebook near-ties)."""
    rgb = np.ascontiguousarray(astronaut_bgr[100:164, 150:278, ::-1].transpose(2, 0, 1)[None], np.float32) / 255
    lr = torch.from_numpy(rgb)
    eps = torch.from_numpy(glue.noise((1, 3, 64, 128)))
    with torch.no_grad():
        whole = small(lr, eps)
        tiled = TiledSinSR(small, tile=64, context=16)(lr, eps)

    def u8(x: torch.Tensor) -> np.ndarray:
        return np.rint(x.numpy() * 255).astype(np.float64)

    mse = float(np.mean((u8(tiled) - u8(whole)) ** 2))
    assert tiled.shape == whole.shape == (1, 3, 256, 512)
    assert mse == 0 or 10 * np.log10(255**2 / mse) >= 40.0
