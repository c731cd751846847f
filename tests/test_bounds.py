"""Every number a user gives is checked by one rule for the API, the command line and the TOML policy: not a
number, NaN, infinite, negative, zero where it means nothing, or huge is a KvqeError (exit 2) naming the
parameter and the value, before any work starts."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import kvqe
from kvqe.bounds import MAX_FRAMES, Bound, checked
from kvqe.cli import main
from kvqe.errors import KvqeError
from kvqe.gate_policy import Policy, load_policy
from kvqe.sdk.sampling import keyframe_plan, sampling_spec
from kvqe.sdk.sources import open_source

SAMPLES = Path(__file__).resolve().parents[1] / "kvqe" / "samples"
VIDEO, PHOTO = SAMPLES / "astronaut_pan.mp4", SAMPLES / "astronaut.png"
NAN, INF = math.nan, math.inf
HUGE = 10**12


@pytest.fixture(scope="module")
def vqa() -> kvqe.sdk.model.Model:
    return kvqe.load("vqa")


@pytest.fixture(scope="module")
def sr() -> kvqe.sdk.model.Model:
    return kvqe.load("sr")


def _bad(values: list[Any], name: str) -> list[Any]:
    return [pytest.param(name, value, id=f"{name}={value!r}") for value in values]


API_CASES = [
    *_bad([NAN, INF, -INF, -1.0, 0.0, float(HUGE), True], "per_second"),
    *_bad([NAN, INF, -1, 0, HUGE, 2.0], "max_frames"),
    *_bad([NAN, INF, -INF, -1.0, 0.0, float(HUGE)], "timeout"),
    *_bad([NAN, -1, 0, 2**40], "max_pixels"),
    *_bad([NAN, INF, -1.0, 0.0, float(HUGE)], "fps"),
    *_bad([NAN, INF, -1.0, 0.0, float(HUGE)], "window_s"),
    *_bad([NAN, -1, 1, HUGE], "tile"),
    *_bad([NAN, -1, HUGE], "threads"),
    *_bad([NAN, INF, -INF, -1.0, 1000.0], "min_score"),
    *_bad([NAN, INF, -1.0, 0.0, 1000.0], "max_gain"),
    *_bad([NAN, INF, -1.0, 0.0, float(HUGE)], "segment_seconds"),
]


def _call(name: str, value: Any, vqa: kvqe.sdk.model.Model, sr: kvqe.sdk.model.Model) -> object:
    if name in ("per_second", "max_frames", "timeout", "max_pixels", "fps"):
        return vqa.score(VIDEO, **{name: value})
    if name == "window_s":
        return list(vqa.stream(VIDEO, window_s=value))
    if name == "tile":
        return sr.enhance(np.zeros((32, 32, 3), np.uint8), tile=value)
    if name == "threads":
        return kvqe.load("vqa", threads=value)
    if name == "min_score":
        return kvqe.gate(PHOTO, min_score=value, scorer=vqa)
    return kvqe.gate(PHOTO, min_score=50, scorer=vqa, **{name: value})


@pytest.mark.parametrize(("name", "value"), API_CASES)
def test_the_api_refuses_a_bad_number_naming_it(vqa, sr, name: str, value: Any) -> None:
    with pytest.raises(KvqeError) as refused:
        _call(name, value, vqa, sr)
    assert refused.value.exit_code == 2
    assert name in str(refused.value) and f"got {value!r}" in str(refused.value)


@pytest.mark.parametrize("value", [NAN, INF, -INF, "high", True])
@pytest.mark.parametrize("key", ["default", "thresholds", "max_gain"])
def test_a_policy_refuses_a_bad_number_from_toml_and_from_the_api(tmp_path: Path, key: str, value: Any) -> None:
    given = {"thresholds": {"720p": value}} if key == "thresholds" else {"default": 50.0, key: value}
    with pytest.raises(KvqeError, match=key):
        Policy(**given)
    literal = {NAN: "nan", INF: "inf", -INF: "-inf", "high": '"high"', True: "true"}[value]
    text = {"thresholds": f'[thresholds]\n"720p" = {literal}\n', "default": f"default = {literal}\n",
            "max_gain": f"default = 50\nmax_gain = {literal}\n"}[key]
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    with pytest.raises(KvqeError, match=rf"policy.toml: .*{key}.* must be .*got"):
        load_policy(policy)
    run = CliRunner().invoke(main, ["gate", str(PHOTO), "--policy", str(policy)])
    assert run.exit_code == 2 and key in run.output and "Traceback" not in run.output


def test_a_policy_threshold_outside_the_score_range_is_refused(vqa) -> None:
    with pytest.raises(KvqeError, match=r"policy default, within the scorer's score range, must be .* from 0 to "
                                         r"100, got 150"):
        kvqe.gate(PHOTO, policy=Policy(default=150.0), scorer=vqa)


CLI_CASES = [
    (["score", str(VIDEO), "--per-second"], ["nan", "inf", "-inf", "-1", "0", "1e12"], "--per-second"),
    (["score", str(VIDEO), "--max-frames"], ["-1", "0", "1000000000"], "--max-frames"),
    (["score", str(VIDEO), "--fps"], ["nan", "inf", "-1", "0", "1e12"], "--fps"),
    (["score", str(VIDEO), "--timeout"], ["nan", "inf", "-inf", "-1", "1e12"], "--timeout"),
    (["score", str(VIDEO), "--max-pixels"], ["-1", str(2**40)], "--max-pixels"),
    (["score", str(VIDEO), "--threads"], ["-1", "1000000"], "--threads"),
    (["enhance", str(PHOTO), "-o", "{tmp}/out.png", "--tile"], ["-1", "1", "1000000000"], "--tile"),
    (["gate", str(PHOTO), "--min-score"], ["nan", "inf", "-inf"], "--min-score"),
    (["gate", str(PHOTO), "--min-score"], ["1000", "-5"], "min_score"),
    (["gate", str(PHOTO), "--min-score", "50", "--segment-seconds"], ["nan", "inf", "-1", "0", "1e12"],
     "--segment-seconds"),
]


@pytest.mark.parametrize(("args", "value", "named"), [
    pytest.param(args, value, named, id=f"{args[0]} {named} {value}") for args, values, named in CLI_CASES
    for value in values])
def test_the_cli_refuses_a_bad_number_naming_it(tmp_path: Path, args: list[str], value: str, named: str) -> None:
    command = [a.replace("{tmp}", str(tmp_path)) for a in args]
    for as_json in ([], ["--json"]):
        run = CliRunner().invoke(main, [*command, value, *as_json])
        assert run.exit_code == 2, run.output
        assert named in run.output and "must be" in run.output and "Traceback" not in run.output
    assert list(tmp_path.iterdir()) == []


def test_zero_still_switches_a_limit_off_on_the_command_line() -> None:
    run = CliRunner().invoke(main, ["score", str(PHOTO), "--timeout", "0", "--max-pixels", "0", "--threads", "0"])
    assert run.exit_code == 0, run.output


def test_the_keyframe_plan_is_bounded() -> None:
    spec = sampling_spec(kvqe.load("vqa").input_spec.sampling, per_second=1000, max_frames=MAX_FRAMES.high)
    assert len(keyframe_plan(10**9, 30.0, spec)) == MAX_FRAMES.high
    with pytest.raises(KvqeError, match="max_frames must be an integer from 1 to 10,000, got 10001"):
        sampling_spec(spec, max_frames=10_001)


def test_a_bound_describes_itself() -> None:
    assert Bound(16, 64, integer=True, zero=True).describe() == "0 or an integer from 16 to 64"
    assert checked(np.float32(2.5), "x", Bound(0, 3, low_open=True)) == 2.5
    with pytest.raises(KvqeError, match=r"x must be a finite number above 0 and at most 3, got 4"):
        checked(4, "x", Bound(0, 3, low_open=True))
    with pytest.raises(KvqeError, match="fps"):
        open_source(VIDEO, fps=NAN)
