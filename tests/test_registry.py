"""Registry-driven checks: every card's figures are what the project's counter measures."""
from __future__ import annotations

import pytest
import torch

from kvqe.errors import BadInputError
from kvqe.models.flops import count_macs, count_params
from kvqe.models.registry import create_model, get_model, list_models
from kvqe.sdk.preprocess import vqa_input_shape

NAMES = [card.name for card in list_models()]


def flops_input(card) -> torch.Tensor:
    if "flops_input_shape" in card.extra:
        return torch.zeros(card.extra["flops_input_shape"])
    if card.task == "vqa":
        return torch.zeros(card.input.sampling.max_frames, *vqa_input_shape(card.input))
    return torch.zeros(1, 3, 256, 256)


@pytest.mark.parametrize("name", NAMES)
def test_card_params_and_gflops_match_the_counter(name: str) -> None:
    card = get_model(name).card
    module = create_model(name)
    assert count_params(module) == card.params
    assert round(count_macs(module, flops_input(card)) / 1e9, 2) == card.gflops
    assert card.licence and card.weights_source and card.task in ("vqa", "sr")


def test_unknown_model_is_a_plain_error() -> None:
    with pytest.raises(BadInputError, match="registered models: .*realesrgan-x4plus"):
        get_model("esrgan")
