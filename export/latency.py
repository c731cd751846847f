"""INT8 against FP32 speed on one backend: the same inputs through both artifacts, runs interleaved so
that the machine's load falls on both alike, median per round."""
from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from kvqe.runtimes import Runner

ROUNDS = 3
INPUTS = 2  # validation samples timed per round
FASTER_BELOW = 0.95  # a ratio closer to 1 is within the timing noise of a loaded machine: not faster


def _round(runner: Runner, inputs: Sequence[np.ndarray]) -> float:
    began = time.perf_counter()
    for x in inputs:
        runner.run_single(x)
    return (time.perf_counter() - began) / len(inputs)


def compare_latency(candidate: Runner, fp32: Runner, inputs: Sequence[np.ndarray], *,
                    rounds: int = ROUNDS) -> dict[str, Any]:
    """Milliseconds per input of ``candidate`` and of ``fp32`` (both unloaded; loaded and closed here), one
    warm-up run each, then ``rounds`` interleaved rounds over ``inputs``; ``ratio`` is candidate / FP32 and
    ``faster_than_fp32`` says whether it is below :data:`FASTER_BELOW`."""
    if not inputs:
        raise ValueError("no inputs to time")
    with candidate, fp32:
        candidate.run_single(inputs[0])
        fp32.run_single(inputs[0])
        times: dict[str, list[float]] = {"candidate": [], "fp32": []}
        for _ in range(rounds):
            times["fp32"].append(_round(fp32, inputs))
            times["candidate"].append(_round(candidate, inputs))
    candidate_ms, fp32_ms = (1000.0 * statistics.median(times[k]) for k in ("candidate", "fp32"))
    ratio = candidate_ms / fp32_ms
    return {"ms": round(candidate_ms, 3), "fp32_ms": round(fp32_ms, 3), "ratio": round(ratio, 3),
            "faster_than_fp32": ratio < FASTER_BELOW, "rounds": rounds,
            "inputs": f"{len(inputs)} validation sample(s) of shape {list(inputs[0].shape)}"}
