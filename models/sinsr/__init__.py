"""SinSR one-step diffusion SR (UNetModelSwin + VQ-f4); importing this package registers ``sinsr`` and
``sinsr+realesrgan``."""
from kvqe.models.sinsr.one_step import SinSR, SinSRDecoder, SinSRDenoiser, SinSREncoder
from kvqe.models.sinsr.registration import build_sinsr, load_sinsr_weights, small_sinsr, tiny_sinsr
from kvqe.models.sinsr.restored import RestoredSinSR
from kvqe.models.sinsr.tiled import TiledSinSR
from kvqe.models.sinsr.unet import UNetModelSwin
from kvqe.models.sinsr.vq import VQModelTorch

__all__ = ["RestoredSinSR", "SinSR", "SinSRDecoder", "SinSRDenoiser", "SinSREncoder", "TiledSinSR", "UNetModelSwin",
           "VQModelTorch", "build_sinsr", "load_sinsr_weights", "small_sinsr", "tiny_sinsr"]
