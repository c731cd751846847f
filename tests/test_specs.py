"""The typed contracts: the manifest and its input/output specs read and write their JSON form unchanged, and
the task object owns what differs between VQA and SR (gates, comparators, graph shapes)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from kvqe.bundle import read_bundle
from kvqe.calibration.accuracy import SrImages, VqaScores
from kvqe.calibration.gates import Gate
from kvqe.calibration.tasks import SR, TASKS, VQA, task_named
from kvqe.errors import BadInputError
from kvqe.manifest import SCHEMA_VERSION, Manifest, write_manifest
from kvqe.models.registry import list_models
from kvqe.sdk.loader import EMBEDDED, embedded_bundle_path
from kvqe.specs import InputSpec, OutputSpec, Sampling, Tile


@pytest.mark.parametrize("card", list_models(), ids=lambda card: card.name)
def test_every_card_spec_survives_the_manifest_round_trip(card) -> None:
    written = json.loads(json.dumps({"input": card.input.to_json(), "output": card.output.to_json()}))
    assert InputSpec.from_json(written["input"]) == card.input
    assert OutputSpec.from_json(written["output"]) == card.output
    assert None not in written["input"].values() and None not in written["output"].values()


@pytest.mark.parametrize("name", sorted(EMBEDDED))
def test_embedded_manifests_read_into_specs_and_back_unchanged(name: str, tmp_path: Path) -> None:
    text = (embedded_bundle_path(name) / "manifest.json").read_text()
    manifest = json.loads(text)
    for section, spec_type in (("input", InputSpec), ("output", OutputSpec)):
        spec = spec_type.from_json(manifest[section])
        assert json.dumps(spec.to_json(), sort_keys=True) == json.dumps(manifest[section], sort_keys=True)
    typed = Manifest.from_json(manifest)
    assert typed.schema_version == SCHEMA_VERSION and typed.input == read_bundle(embedded_bundle_path(name)).input_spec
    write_manifest(tmp_path, typed)  # validated again on the way out, written byte for byte as shipped
    assert (tmp_path / "manifest.json").read_text() == text


def test_optional_fields_are_absent_not_null_and_defaults_are_read_from_them() -> None:
    spec = InputSpec.from_json({"colour_order": "BGR", "value_range": [0, 255], "mean": [0, 0, 0], "std": [1, 1, 1],
                                "tile": {"size": 0, "pad": 4}})
    assert spec.to_json() == {"colour_order": "BGR", "value_range": [0, 255], "mean": [0, 0, 0], "std": [1, 1, 1],
                              "tile": {"size": 0, "pad": 4}}
    assert spec.tile == Tile(size=0, pad=4) and spec.multiple == 1 and spec.sampling is None
    assert OutputSpec(scale=2).clamps and not OutputSpec(scale=2, clamp=False).clamps
    assert Sampling(per_second=1, max_frames=4, pad="repeat_last").repeats_last


def test_the_task_picks_its_gates_and_refuses_foreign_metrics() -> None:
    assert VQA.gates("int8") == (Gate("srocc", ">=", 0.98), Gate("plcc", ">=", 0.98))
    assert SR.gates("fp16") == (Gate("psnr", ">=", 45.0),)
    assert SR.gates("int8", [Gate.parse("fp16:psnr>=40")]) == SR.default_gates["int8"]  # scoped to another precision
    assert SR.gates("int8", [Gate.parse("psnr_min>=30")]) == (Gate("psnr_min", ">=", 30.0),)
    with pytest.raises(BadInputError, match="does not apply to a sr model"):
        SR.gates("int8", [Gate.parse("srcc>=0.99")])
    with pytest.raises(BadInputError, match="unknown task 'depth'"):
        task_named("depth")
    assert set(TASKS) == {"vqa", "sr"}


@pytest.mark.parametrize("card", list_models(), ids=lambda card: card.name)
def test_the_task_shapes_the_graph_and_the_tensorrt_profile(card) -> None:
    task = task_named(card.task)
    shape = task.graph_input(card.input)
    low, opt, high = task.profile(card.input, 256, 3)
    if card.task == "vqa":
        frames = card.input.sampling.max_frames
        assert shape[0] is None and low == (1, *shape[1:]) and opt == high == (frames, *shape[1:])
        assert task.comparator is VqaScores
    else:
        assert shape == (None, 3, None, None) and low[2] >= 16 and high[2] % card.input.multiple == 0
        assert high[2] >= 256 + 2 * card.input.tile.pad
        assert task.comparator is SrImages
    batches = task.batches(card.input)
    assert [b.shape[0] for b in batches] in ([1, 3], [1, 2]) and all(b.dtype == np.float32 for b in batches)


def test_a_bundle_spec_is_typed_and_replaceable() -> None:
    spec = OutputSpec(score_range=(0.0, 100.0), pooling="mean")
    assert replace(spec, units="VMAF").to_json() == {"score_range": [0.0, 100.0], "pooling": "mean", "units": "VMAF"}
