"""Model registry (timm style): ``@register_model`` factories keyed by name, each with a typed card.

The card travels with the model into the bundle manifest; it holds everything a runtime needs to feed
the model (input spec, normalisation, sampling) and what a user needs to trust it (params, GFLOPs,
weights source, licence).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kvqe.errors import BadInputError
from kvqe.specs import InputSpec, OutputSpec

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelCard:
    """Typed description of a registered model.

    ``input`` and ``output`` are the specs the manifest stores (:mod:`kvqe.specs`).
    ``params`` and ``gflops`` are the figures the project's own counter measures (a registry test checks
    them); ``gflops`` counts one multiply-add as one FLOP, on the input ``flops_input`` describes.
    """

    name: str
    task: Literal["vqa", "sr"]
    description: str
    input: InputSpec
    output: OutputSpec
    params: int
    gflops: float
    flops_input: str
    weights_source: str
    licence: str
    weight_parts: tuple[str, ...] = ("model",)
    default_weights: str | None = None
    onnx_opset: int = 18
    onnx_tolerance: float = 1e-4
    quant_policy: str = "conv-sr"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ModelFactory = Callable[[], "torch.nn.Module"]
WeightLoader = Callable[["torch.nn.Module", dict[str, Path]], dict[str, Any]]
WeightCheck = Callable[[dict[str, Path]], None]


@dataclass(frozen=True)
class RegisteredModel:
    card: ModelCard
    factory: ModelFactory
    load_weights: WeightLoader
    check_weights: WeightCheck | None = None  # names the files needed before a large net is built


_REGISTRY: dict[str, RegisteredModel] = {}


def register_model(
    card: ModelCard,
    *,
    load_weights: WeightLoader,
    check_weights: WeightCheck | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory that builds the (untrained) torch module for ``card``.

    ``load_weights(module, {part: path})`` fills the module strictly and returns provenance facts for
    the manifest (``{"source": str, "files": {part: {"name", "sha256"}}}``). An empty mapping means
    "use the default weights source"; a model without one raises BadInputError naming the files needed.
    ``check_weights({part: path})``, if given, raises that error before the module is built.
    """

    def wrap(factory: ModelFactory) -> ModelFactory:
        if card.name in _REGISTRY:
            raise ValueError(f"model {card.name!r} is registered twice")
        _REGISTRY[card.name] = RegisteredModel(card, factory, load_weights, check_weights)
        return factory

    return wrap


# The modules whose ``@register_model`` factories make up the zoo, imported by name on first lookup so that
# this module imports none of the models it registers (they import it).
ZOO = ("kvqe.models.realesrgan", "kvqe.models.sharpmind", "kvqe.models.sinsr.registration", "kvqe.models.student")


def _ensure_models_imported() -> None:
    for module in ZOO:
        importlib.import_module(module)


def list_models() -> list[ModelCard]:
    _ensure_models_imported()
    return [entry.card for entry in _REGISTRY.values()]


def get_model(name: str) -> RegisteredModel:
    _ensure_models_imported()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise BadInputError(f"unknown model {name!r}; registered models: {known}") from None


def create_model(name: str) -> torch.nn.Module:
    """Build the registered architecture (random init, eval mode)."""
    module = get_model(name).factory()
    return module.eval()
