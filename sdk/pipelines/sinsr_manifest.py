"""The manifest ``pipeline`` entry of SinSR's kinds: what the runtime reads back, and the glue in prose for
readers of the manifest (the constants, the noise, the resizing, the exact-tiling design)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kvqe.sdk.pipelines.sinsr_glue as glue
from kvqe.errors import BadInputError


def describe(kind: str, *, out_scale: int = glue.SCALE, seed: int = glue.DEFAULT_SEED,
             precisions: Mapping[str, Mapping[str, str]] | None = None,
             exact_tiling: Mapping[str, Any] | None = None, **facts: Any) -> dict[str, Any]:
    """The manifest ``pipeline`` entry of ``kind`` (``sinsr`` or ``sinsr+realesrgan``).

    ``exact_tiling``: ``{"norms": {tile stage: GroupNorm count}, ...}``; the entry then declares
    :data:`~kvqe.sdk.pipelines.sinsr_glue.EXACT_STAGES` after the pipeline's stages, and the composed
    runner tiles exactly."""
    if kind not in glue.KINDS:
        raise BadInputError(f"unknown pipeline kind {kind!r}; choose {', '.join(glue.KINDS)}")
    glue.check_out_scale(out_scale)
    glue_steps = [
        "y0 = (lr - 0.5) / 0.5, reflect-padded at the bottom/right to multiples of 64 (encoder input)",
        "encoder: bicubic x4 (PyTorch, a=-0.75, unclamped) then the VQ-f4 encoder -> z_y (LR-sized latent)",
        (f"denoiser input: cat[(z_y + {float(glue.NOISE_SCALE):.8g} * eps) / {float(glue.INPUT_SCALE):.8g}, y0]"
         f" (t = {glue.TIMESTEP} baked into the graph)"),
        "decoder: vector-quantize x0, decode -> x4; crop to 4h x 4w, clamp to [-1, 1], * 0.5 + 0.5",
    ]
    resizing = [] if out_scale == glue.SCALE else [
        f"the x4 SinSR result is area-resized (box average {glue.SCALE // out_scale}x{glue.SCALE // out_scale}) "
        f"to x{out_scale}" + (" (the input size: enhancement in place)" if out_scale == 1 else "")]
    if kind == "sinsr+realesrgan":
        glue_steps.insert(0, "restore: Real-ESRGAN x4 on the LR, clamped to [0, 1], area-resized back to the LR "
                             "size (4x4 box average = cv2.INTER_AREA): the restored LR that SinSR takes")
    block = glue.NOISE_BLOCK
    entry: dict[str, Any] = {
        "kind": kind, "stages": list(glue.KINDS[kind]), "out_scale": out_scale, "seed": seed,
        "noise": {"distribution": "standard normal, float64 draws cast to float32",
                  "anchoring": f"latent pixel (y, x) comes from the {block}x{block} block "
                               f"(y // {block}, x // {block}) of the image, "
                               "numpy.random.default_rng([seed, y // 64, x // 64]).standard_normal((3, 64, 64)); "
                               "tiles see the noise the whole image has at their place"},
        "constants": {"scale": glue.SCALE, "multiple_of": glue.MULTIPLE, "timestep": glue.TIMESTEP,
                      "noise_scale": float(glue.NOISE_SCALE), "input_scale": float(glue.INPUT_SCALE)},
        "glue": glue_steps, "resizing": resizing,
        "precisions": {p: dict(m) for p, m in (precisions or {}).items()},
    }
    if exact_tiling is not None:
        entry["stages"] += list(glue.EXACT_STAGES)
        entry["exact_tiling"] = {
            **dict(exact_tiling),
            "design": ("tiles (kept size and context per side from the tile settings): encoder_high and "
                       "decoder_high on kept-centre windows, GroupNorm statistics shared by all tiles, gathered "
                       "one norm per pass from the kept-region sums (count, sum, squared deviations; Chan's "
                       "formula in float64); encoder_mid, denoiser and decoder_mid on the whole latent. Exact "
                       "with 32 LR pixels of context. Untiled runs use encoder, denoiser, decoder."
                       + (" The restore stage runs first on kept-centre tiles with the same context; their "
                          "restored LR is assembled whole (LR-sized) for SinSR." if kind == "sinsr+realesrgan"
                          else "")),
            "tile_graph_io": {"inputs": ["x", "stats (N, norms, 32, 2): mean, var", "mask (1, 1, h, w): kept=1"],
                              "outputs": ["y", "sums (N, norms, 32, 3): count, sum, squared deviations"]}}
    entry.update(facts)
    return entry
