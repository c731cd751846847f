"""The task object: everything that differs between a VQA model and an SR model, in one place.

Export, calibration and ``kvqe verify`` ask the model's task (``task_named(card.task)``) instead of
branching on its name: which samples to draw from user media, the held-out data without it, the batches
that check an exported graph, the graph's dynamic axes and TensorRT profile, the comparator that judges an
artifact against FP32, and the gates it must pass. Tasks are frozen: safe to share between threads.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kvqe.calibration import data, validation_inputs
from kvqe.calibration.accuracy import SrImages, VqaScores
from kvqe.calibration.contract import SampleSet
from kvqe.calibration.gates import Gate
from kvqe.errors import BadInputError
from kvqe.sdk.preprocess import vqa_input_shape
from kvqe.sdk.sampling import sampling_spec
from kvqe.specs import InputSpec, OutputSpec

Shape = tuple[int, ...]
Profile = tuple[Shape, Shape, Shape]  # TensorRT optimisation profile: min, opt, max input shapes


@dataclass(frozen=True)
class Task:
    """``sample``: one media source -> its sample groups (:mod:`kvqe.calibration.data`);
    ``share_source``: how one source's samples are split between calibration and validation;
    ``batches`` / ``builtin_set``: real-media inputs without user data (:mod:`.validation_inputs`);
    ``dynamic_axes`` / ``dynamic_output_axes`` / ``graph_input``: the exported graph's input shape;
    ``profile``: TensorRT's shapes for an input spec, a tile size and the graph's input channels;
    ``comparator``: what an artifact is judged on; ``metrics`` / ``default_gates``: the release policy;
    ``tiled``: the runtime cuts inputs into tiles (an engine records the largest it was built for)."""

    name: str
    sample: data.Sampler
    share_source: data.SourceSplit
    batches: Callable[[InputSpec], list[np.ndarray]]
    builtin_set: Callable[[InputSpec], SampleSet]
    dynamic_axes: Mapping[int, str]
    dynamic_output_axes: tuple[int, ...]
    graph_input: Callable[[InputSpec], tuple[int | None, ...]]
    profile: Callable[[InputSpec, int, int], Profile]
    comparator: Callable[[SampleSet, OutputSpec], SrImages | VqaScores]
    metrics: frozenset[str]
    default_gates: Mapping[str, tuple[Gate, ...]]  # per precision
    tiled: bool

    def gates(self, precision: str, overrides: Sequence[Gate] = ()) -> tuple[Gate, ...]:
        """The gates of one artifact: the overrides that apply to its precision, else the defaults.
        An override on a metric this task does not measure is a BadInputError."""
        for gate in overrides:
            if gate.metric not in self.metrics:
                raise BadInputError(f"gate {gate} does not apply to a {self.name} model; "
                                    f"use {', '.join(sorted(self.metrics))}")
        chosen = tuple(g for g in overrides if g.precision in (None, precision))
        return chosen or self.default_gates[precision]


def _vqa_profile(spec: InputSpec, tile: int, channels: int) -> Profile:
    """Batches of 1 to ``max_frames`` preprocessed frames."""
    shape = vqa_input_shape(spec)
    frames = sampling_spec(spec.sampling).max_frames
    return (1, *shape), (frames, *shape), (frames, *shape)


def _sr_profile(spec: InputSpec, tile: int, channels: int) -> Profile:
    """Tiles up to ``tile`` plus context, rounded up to the model's ``multiple_of``, from at least 16 pixels
    (or that multiple)."""
    multiple = spec.multiple
    edge = -(-(tile + 2 * (spec.tile.pad if spec.tile else 0)) // multiple) * multiple
    low = max(16, multiple)
    return (1, channels, low, low), (1, channels, edge, edge), (1, channels, edge, edge)


VQA = Task(
    name="vqa",
    sample=data.vqa_samples,
    share_source=data.alternate_frames,
    batches=validation_inputs.vqa_batches,
    builtin_set=validation_inputs.vqa_builtin_set,
    dynamic_axes={0: "batch"},
    dynamic_output_axes=(0,),
    graph_input=lambda spec: (None, *vqa_input_shape(spec)),
    profile=_vqa_profile,
    comparator=VqaScores,
    metrics=frozenset({"srocc", "plcc", "max_abs"}),
    default_gates={
        "int8": (Gate("srocc", ">=", 0.98), Gate("plcc", ">=", 0.98)),
        "fp16": (Gate("srocc", ">=", 0.995), Gate("plcc", ">=", 0.995)),
        "fp32": (Gate("srocc", ">=", 0.999), Gate("plcc", ">=", 0.999)),
    },
    tiled=False,
)

SR = Task(
    name="sr",
    sample=data.sr_samples,
    share_source=data.alternate_groups,
    batches=validation_inputs.sr_batches,
    builtin_set=validation_inputs.sr_builtin_set,
    dynamic_axes={0: "batch", 2: "height", 3: "width"},
    dynamic_output_axes=(0, 2, 3),
    graph_input=lambda spec: (None, 3, None, None),
    profile=_sr_profile,
    comparator=SrImages,
    metrics=frozenset({"psnr", "psnr_min", "ssim"}),
    default_gates={
        # the worst sample too: a mean can hide one crop (a flat sky, a face) ruined by int8
        "int8": (Gate("psnr", ">=", 35.0), Gate("psnr_min", ">=", 30.0)),
        "fp16": (Gate("psnr", ">=", 45.0),),
        "fp32": (Gate("psnr", ">=", 50.0),),
    },
    tiled=True,
)

TASKS: dict[str, Task] = {task.name: task for task in (VQA, SR)}


def task_named(name: str) -> Task:
    """The task of a model card or manifest (``"vqa"`` or ``"sr"``)."""
    try:
        return TASKS[name]
    except KeyError:
        raise BadInputError(f"unknown task {name!r}; kvqe knows {', '.join(TASKS)}") from None
