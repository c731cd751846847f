"""Constructor kwargs of the official SinSR networks (full) and of the reduced test configs (small)."""
from __future__ import annotations

from typing import Any

UNET_FULL: dict[str, Any] = {
    "image_size": 64, "in_channels": 6, "model_channels": 160, "out_channels": 3, "cond_lq": True,
    "attention_resolutions": [64, 32, 16, 8], "dropout": 0, "channel_mult": [1, 2, 2, 4],
    "num_res_blocks": [2, 2, 2, 2], "conv_resample": True, "dims": 2, "use_fp16": False, "num_head_channels": 32,
    "use_scale_shift_norm": True, "resblock_updown": False, "swin_depth": 2, "swin_embed_dim": 192,
    "window_size": 8, "mlp_ratio": 4,
}
VQ_FULL: dict[str, Any] = {
    "embed_dim": 3, "n_embed": 8192,
    "ddconfig": {"double_z": False, "z_channels": 3, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                 "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
                 "padding_mode": "zeros"},
}
# reduced configs of the test fixtures: UNet 4,666,631 params, VQ 3,496,510
UNET_SMALL: dict[str, Any] = {**UNET_FULL, "model_channels": 32, "swin_embed_dim": 32, "num_head_channels": 16}
VQ_SMALL: dict[str, Any] = {**VQ_FULL, "ddconfig": {**VQ_FULL["ddconfig"], "ch": 32}}
