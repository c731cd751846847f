"""kvqe.runtimes: one Runner protocol and the backends that implement it, registered by name."""
from kvqe.runtimes.base import Runner, TensorSpec
from kvqe.runtimes.registry import AUTO_ORDER, KNOWN_BACKENDS, create_runner, is_available

__all__ = ["AUTO_ORDER", "KNOWN_BACKENDS", "Runner", "TensorSpec", "create_runner", "is_available"]
