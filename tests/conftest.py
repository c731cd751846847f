"""Shared pytest fixtures: real photos (scikit-image), a student checkpoint, exported bundles.

Two tiers (issue #24): ``e2e`` tests export full-size models through ``kvqe-export`` in subprocesses or build
them in-process (Swin-T, RRDBNet x4plus); the fast tier, ``pytest -m "not slow and not e2e"``, runs tiny models
exported in this process. A test that requests a fixture of ``E2E_FIXTURES`` (``vqa_bundle``, ``x4plus_bundle``:
the CLI exports below; SinSR's exported stages) is marked ``e2e`` here, so it cannot land in the fast tier by
accident. ``any_vqa`` and ``any_rrdb`` run a parity test on the tiny bundle (fast tier) and again on the full-size
CLI export (``e2e``). Full-size exports are built once per pytest run and shared by the xdist workers
(``tests/artifacts.py``)."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from artifacts import SharedArtifacts, file_sha256
from support import CARPHONE, Exported, export_in_process, seeded_checkpoint, tiny_rrdb_net, tiny_vqa_net

if TYPE_CHECKING:
    import torch

E2E_FIXTURES = frozenset({
    "vqa_bundle", "vqa_export", "x4plus_bundle",  # below: kvqe-export in a subprocess, full-size Swin-T and RRDBNet
    "sinsr_bundle",  # below: the reduced SinSR's stages exported at FP32 and FP16, gated
    "small_onnx",  # test_sinsr: the reduced SinSR's three stages exported to ONNX
})


TIER_ORDER = {"slow": 0, "e2e": 1, "fast": 2}
# Modules by their measured time in CI, longest first (docs/testing.md): x4plus's INT8, SinSR's bundle and
# pipeline exports, the VQA students in every format, SinSR's full-size graphs, the INT8 search, the toolchain.
LONGEST_MODULES = ("tests/test_export_x4plus.py", "tests/test_sinsr_pipeline.py", "tests/test_sinsr_pipeline_export.py",
                   "tests/test_export_vqa.py", "tests/test_sinsr_onnx.py", "tests/test_int8_search_e2e.py",
                   "tests/test_export_toolchain.py")


def _tier(item: pytest.Item) -> str:
    return "slow" if item.get_closest_marker("slow") else "e2e" if item.get_closest_marker("e2e") else "fast"


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        item.user_properties.append(("tier", _tier(item)))  # the run log and the JUnit XML record it
    # The longest modules first (LONGEST_MODULES, then modules with slow tests, then e2e), so that neither worker
    # is left with a long test at the end; a module's tests stay together (`--dist loadfile` gives each module to
    # one worker, `--no-loadscope-reorder` keeps this order).
    rank: dict[str, tuple[int, int]] = {}
    for position, item in enumerate(items):
        module = item.nodeid.split("::")[0]
        if module in LONGEST_MODULES:
            rank[module] = (-1, LONGEST_MODULES.index(module))
            continue
        first = rank.get(module, (2, position))
        rank[module] = (min(first[0], TIER_ORDER[_tier(item)]), first[1])
    items.sort(key=lambda item: (*rank[item.nodeid.split("::")[0]], TIER_ORDER[_tier(item)]))


# --- the run log .ci/durations.py reads --------------------------------------------------------------------------
# With KVQE_TEST_LOG set, the controlling process (pytest itself, or xdist's controller, which receives every
# worker's events) appends a JSON line when a test starts and one per phase (setup, call, teardown), flushed at
# once: a run that is killed (CI's time limit) still shows what finished, what each test took and what was running.
_TEST_LOG = os.environ.get("KVQE_TEST_LOG")
_IS_CONTROLLER: list[bool] = []


def pytest_configure(config: pytest.Config) -> None:
    _IS_CONTROLLER.append(not hasattr(config, "workerinput"))


def _log(record: dict) -> None:
    if _TEST_LOG and _IS_CONTROLLER and _IS_CONTROLLER[0]:
        with open(_TEST_LOG, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def pytest_runtest_logstart(nodeid: str) -> None:
    _log({"event": "start", "test": nodeid})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    outcome = "failed" if report.failed else "skipped" if report.skipped else "passed"
    _log({"event": report.when, "test": report.nodeid, "tier": dict(report.user_properties).get("tier", "?"),
          "seconds": round(report.duration, 3), "outcome": outcome})


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def coffee_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> SharedArtifacts:
    """Full-size exports and checkpoints built once per pytest run and shared by the xdist workers."""
    return SharedArtifacts.for_run(tmp_path_factory)


@pytest.fixture(scope="session")
def student_checkpoint(artifacts: SharedArtifacts) -> Path:
    """A state_dict of the vqa-sharpmind-swint layout (seeded random init, as a user checkpoint)."""
    def build(folder: Path) -> None:
        import torch

        from kvqe.models.registry import create_model

        torch.manual_seed(0)
        torch.save(create_model("vqa-sharpmind-swint").state_dict(), folder / "student.pth")

    return artifacts.get("swint-checkpoint", {"model": "vqa-sharpmind-swint", "seed": 0}, build) / "student.pth"


@pytest.fixture(scope="session")
def vqa_export(artifacts: SharedArtifacts, student_checkpoint: Path) -> tuple[Path, dict]:
    """``kvqe-export CKPT --arch vqa-sharpmind-swint`` (the full-size Swin-T, ONNX FP32) built once per run, and
    its ``--json`` summary. A wide score range, so untrained scores are not clipped."""
    key = {"model": "vqa-sharpmind-swint", "weights": file_sha256(student_checkpoint), "formats": "default",
           "precisions": "default", "score_range": [-1000, 1000], "calibration": None}
    return artifacts.cli_export("swint-bundle", key, "vqa", str(student_checkpoint), "--arch", "vqa-sharpmind-swint",
                                "--score-range=-1000,1000")


@pytest.fixture(scope="session")
def vqa_bundle(vqa_export: tuple[Path, dict]) -> Path:
    return vqa_export[0]


@pytest.fixture(scope="session")
def sr_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real photos (scikit-image, 256x256 crops) plus one real clip: the full-size SR exports' calibration and
    validation media."""
    import skimage.data

    folder = tmp_path_factory.mktemp("calib_sr")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "cat"):
        rgb = getattr(skimage.data, name)()
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)[:256, :256])
    shutil.copy(CARPHONE, folder / "carphone.mp4")
    return folder


@pytest.fixture(scope="session")
def x4plus_bundle(artifacts: SharedArtifacts) -> Path:
    """``kvqe-export realesrgan-x4plus --formats onnx`` (official weights) built once per run."""
    key = {"model": "realesrgan-x4plus", "weights": "official", "formats": "onnx", "precisions": "default",
           "calibration": None}
    return artifacts.cli_export("x4plus-bundle", key, "x4plus", "realesrgan-x4plus", "--formats", "onnx")[0]


def _sharpmind() -> torch.nn.Module:
    from kvqe.models.registry import create_model

    return create_model("vqa-sharpmind-swint")


@pytest.fixture(scope="session")
def tiny_vqa(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A 1,553-parameter VQA net exported in this process as ``vqa-sharpmind-swint`` (the same card, input
    geometry, sampling and score range as ``vqa_bundle``). The weights are scaled so that frames differ by
    whole score units."""
    root = tmp_path_factory.mktemp("tiny_vqa")
    checkpoint = seeded_checkpoint(tiny_vqa_net, root / "tiny_vqa.pth", scale=8.0)
    export_in_process("vqa-sharpmind-swint", root / "bundle", checkpoint, tiny_vqa_net, score_range=(-1000.0, 1000.0))
    return Exported(root / "bundle", checkpoint, tiny_vqa_net)


@pytest.fixture(scope="session")
def tiny_rrdb(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """RRDBNet with one 8-feature RRDB exported in this process as ``realesrgan-x4plus`` (ONNX FP32). Its
    weights (seeded init times 2, the last bias 0.75) give textured output around mid-grey, most of it
    unclamped."""
    root = tmp_path_factory.mktemp("tiny_rrdb")
    checkpoint = seeded_checkpoint(tiny_rrdb_net, root / "tiny_rrdb.pth", scale=2.0, offsets={"conv_last.bias": 0.75})
    export_in_process("realesrgan-x4plus", root / "bundle", checkpoint, tiny_rrdb_net)
    return Exported(root / "bundle", checkpoint, tiny_rrdb_net)


@pytest.fixture(scope="session", params=["tiny", pytest.param("swint", marks=pytest.mark.e2e)])
def any_vqa(request: pytest.FixtureRequest) -> Exported:
    """The tiny VQA bundle (fast tier), then the full-size Swin-T student exported by the CLI (``e2e``)."""
    if request.param == "tiny":
        return request.getfixturevalue("tiny_vqa")
    return Exported(request.getfixturevalue("vqa_bundle"), request.getfixturevalue("student_checkpoint"), _sharpmind)


@pytest.fixture(scope="session", params=["tiny", pytest.param("x4plus", marks=pytest.mark.e2e)])
def any_rrdb(request: pytest.FixtureRequest) -> Path:
    """The tiny RRDBNet bundle (fast tier), then x4plus with its official weights exported by the CLI (``e2e``)."""
    return request.getfixturevalue("tiny_rrdb").bundle if request.param == "tiny" else request.getfixturevalue(
        "x4plus_bundle")


# --- the reduced SinSR (test_sinsr_pipeline*.py) ---------------------------------------------------------------

@pytest.fixture(scope="session")
def sinsr_small() -> torch.nn.Module:
    from sinsr_fixtures import small_with_fixture_weights

    return small_with_fixture_weights()


@pytest.fixture(scope="session")
def sinsr_checkpoints(sinsr_small: torch.nn.Module, artifacts: SharedArtifacts) -> dict[str, Path]:
    """The reduced nets saved under the official checkpoint names, as a user would pass them."""
    from sinsr_fixtures import checkpoint_paths, save_checkpoints

    folder = artifacts.get("sinsr-small-checkpoints", {"model": "sinsr", "weights": "fixtures seed 0"},
                           lambda folder: save_checkpoints(sinsr_small, folder))
    return checkpoint_paths(folder)


@pytest.fixture(scope="session")
def sinsr_bundle(sinsr_checkpoints: dict[str, Path], artifacts: SharedArtifacts) -> tuple[Path, dict]:
    """``sinsr`` exported end to end through the Python API: ONNX FP32 (the reference) and FP16 per stage, built
    once per run; with the export's summary."""
    from sinsr_fixtures import export_small

    def build(folder: Path) -> None:
        summary = export_small("sinsr", folder / "sinsr", sinsr_checkpoints, precisions=("fp32", "fp16"))
        (folder / "summary.json").write_text(json.dumps(summary))

    key = {"model": "sinsr", "weights": {part: file_sha256(path) for part, path in sinsr_checkpoints.items()},
           "formats": "default", "precisions": ["fp32", "fp16"], "calibration": None}
    folder = artifacts.get("sinsr-bundle", key, build)
    return folder / "sinsr", json.loads((folder / "summary.json").read_text())
