"""Shared by the SinSR tests: the fixtures' configs, goldens and synthetic weights, how stages are compared
with the goldens, and the reduced SinSR's pipeline bundle (the fixtures of it are in conftest.py)."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from support import fixture_weights, shared_fixture

from kvqe.export.bundle_builder import ExportRequest, build_bundle
from kvqe.models.realesrgan import SRVGGNetCompact
from kvqe.models.sinsr import RestoredSinSR, SinSR, build_sinsr, small_sinsr, tiny_sinsr
from kvqe.models.sinsr.registration import CHECKPOINTS
from kvqe.sdk.pipelines import sinsr_glue as glue
from kvqe.sdk.pipelines.sinsr import anchored_noise

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


def fixture_json(name: str) -> Any:
    return json.loads(shared_fixture(f"sinsr/{name}").read_text())


def load_golden(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(shared_fixture(f"sinsr/{name}")))


def load_fixture_weights(net: torch.nn.Module, layout: str) -> None:
    """The fixtures' synthetic weights (seed 0); buffers stay the module's own."""
    state = fixture_weights().make_state_dict(fixture_json(f"layout_{layout}.json"), seed=0)
    net.load_state_dict({**net.state_dict(), **{k: torch.from_numpy(v) for k, v in state.items()}}, strict=True)


def fixture_sinsr(size: str) -> SinSR:
    configs = fixture_json("configs.json")
    model = build_sinsr(configs[f"unet_{size}"]["kwargs"], configs[f"vq_{size}"]["kwargs"])
    load_fixture_weights(model.unet, f"unet_{size}")
    load_fixture_weights(model.vq, f"vq_{size}")
    return model


def max_diff(a: torch.Tensor | np.ndarray, b: np.ndarray) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    assert a.shape == b.shape
    return float(np.abs(a - b).max())


def assert_close(got: dict[str, torch.Tensor], golden: dict[str, np.ndarray]) -> None:
    diffs = {name: max_diff(value, golden[name]) for name, value in got.items()}
    assert all(d <= ATOL for d in diffs.values()), diffs


def assert_codes(model: SinSR, x0: torch.Tensor | np.ndarray, golden: dict[str, np.ndarray]) -> np.ndarray:
    """Codes of ``x0`` equal the golden ones wherever the golden gap is safe; returns the mismatch mask."""
    codes = model.vq.quantize.codes(torch.as_tensor(x0)).numpy()
    differ = codes != golden["codes"]
    assert not (differ & (golden["code_gap"] > SAFE_GAP)).any()
    return differ


class Capture:
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


def end_to_end(model: SinSR, golden: dict[str, np.ndarray]) -> None:
    """``SinSR.forward`` on the golden LR and noise: every float stage, codes where safe, and ``sr`` tightly
    when all codes match (otherwise only near-tie pixels may differ, with the README's bounded effect)."""
    paths = {"z_y": "vq.quant_conv", "x0_pred": "unet"}
    with torch.no_grad(), Capture(model, paths) as captured:
        sr = model(torch.from_numpy(golden["lr"]), torch.from_numpy(golden["eps"]))
        differ = assert_codes(model, captured["x0_pred"], golden)
    assert_close(captured, golden)
    assert sr.shape == golden["sr"].shape
    assert max_diff(sr, golden["sr"]) <= (ATOL if not differ.any() else 0.05)


# --- the pipeline bundle of the reduced SinSR ------------------------------------------------------------

PIPELINE_STAGES = ("encoder", "denoiser", "decoder")
EXACT_STAGES = ("encoder_high", "encoder_mid", "decoder_mid", "decoder_high")  # the split VQ: exact tiling, FP32


def small_with_fixture_weights() -> SinSR:
    """The reduced SinSR of :func:`kvqe.models.sinsr.small_sinsr` with the fixtures' weights, in eval mode."""
    model = small_sinsr()
    for part in ("unet", "vq"):
        net = getattr(model, part)
        layout = json.loads(shared_fixture(f"sinsr/layout_{part}_small.json").read_text())
        state = fixture_weights().make_state_dict(layout, seed=0)
        net.load_state_dict({**net.state_dict(), **{k: torch.from_numpy(v) for k, v in state.items()}})
    return model.eval()


def checkpoint_paths(folder: Path) -> dict[str, Path]:
    """Where :func:`save_checkpoints` writes each part in ``folder``: the official checkpoint names."""
    return {part: folder / name for part, name in CHECKPOINTS.items()}


def save_checkpoints(model: SinSR, folder: Path) -> dict[str, Path]:
    """``model``'s nets saved as a user would pass them (the UNet wrapped in ``state_dict``, as released)."""
    paths = checkpoint_paths(folder)
    torch.save({"state_dict": model.unet.state_dict()}, paths["unet"])
    torch.save(model.vq.state_dict(), paths["vq"])
    return paths


def save_tiny_checkpoints(folder: Path) -> dict[str, Path]:
    """:func:`~kvqe.models.sinsr.tiny_sinsr` (initialised with seed 0) saved under the official checkpoint names."""
    torch.manual_seed(0)
    return save_checkpoints(tiny_sinsr(), folder)


def export_small(model: str, out: Path, weights: dict[str, Path], nets: Callable[[], SinSR] = small_sinsr,
                 **options: Any) -> dict[str, Any]:
    """``sinsr`` or ``sinsr+realesrgan`` exported through the Python API with the reduced nets (``nets``:
    :func:`~kvqe.models.sinsr.small_sinsr`, or :func:`~kvqe.models.sinsr.tiny_sinsr` with its checkpoints)."""
    factory = nets if model == "sinsr" else (lambda: RestoredSinSR(SRVGGNetCompact(num_conv=16), nets()))
    return build_bundle(ExportRequest(model, out, weights, factory=factory, **options))


def rgb01(bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1)[None], np.float32) / 255


def to_bgr(sr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(np.rint(sr[0] * 255), 0, 255).astype(np.uint8).transpose(1, 2, 0), cv2.COLOR_RGB2BGR)


def torch_sr(model: torch.nn.Module, bgr: np.ndarray) -> np.ndarray:
    """The torch one step on ``bgr`` with the runtime's noise (anchored at the origin, padded latent size)."""
    lr = rgb01(bgr)
    eps = anchored_noise((1, 3, *glue.padded_size(*lr.shape[2:])))
    with torch.no_grad():
        return to_bgr(model(torch.from_numpy(lr), torch.from_numpy(eps)).numpy())
