"""PyTorch runner: the FP32 reference that exported artifacts are compared against."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kvqe.errors import missing_extra
from kvqe.runtimes.base import Runner, TensorSpec

if TYPE_CHECKING:
    import torch


class TorchRunner(Runner):
    """Runs an in-memory ``torch.nn.Module`` on the CPU in float32, eval mode, no grad.

    Threads: safe to share for a module whose forward keeps no state between calls (every kvqe model: eval
    mode, no hooks or caches written in forward). Each call runs the forward under ``inference_mode`` on
    its own tensors; parameters are only read. ``threads`` sets torch's intra-op threads, which is
    process-wide: concurrent calls share that pool.
    """

    name = "torch"

    def __init__(self, module: torch.nn.Module, input_spec: TensorSpec, *, threads: int = 0,
                 output_name: str = "output") -> None:
        """``input_spec``: the module's one input; ``output_name``: what :meth:`infer` calls its output."""
        super().__init__()
        self.module = module
        self.spec = input_spec
        self.output_name = output_name
        self.threads = threads

    def _load(self) -> None:
        try:
            import torch
        except ImportError:
            raise missing_extra("torch", "export") from None
        if self.threads:
            torch.set_num_threads(self.threads)
        self.module.eval()

    def _input_specs(self) -> tuple[TensorSpec, ...]:
        return (self.spec,)

    def _output_specs(self) -> tuple[TensorSpec, ...]:
        return (TensorSpec(self.output_name, np.dtype(np.float32), (None,) * len(self.spec.shape)),)

    def _infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            return {self.output_name: self.module(torch.from_numpy(feeds[self.spec.name])).numpy()}

    def _close(self) -> None:
        pass
