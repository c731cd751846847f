"""Shared pytest fixtures: real photos (scikit-image), a student checkpoint, exported bundles.

Two tiers (issue #24): ``e2e`` tests export full-size models through ``kvqe-export`` in subprocesses or build
them in-process (Swin-T, RRDBNet x4plus); the fast tier, ``pytest -m "not slow and not e2e"``, runs tiny models
exported in this process. A test that requests a fixture of ``E2E_FIXTURES`` (``vqa_bundle``, ``x4plus_bundle``:
the CLI exports below; SinSR's exported stages) is marked ``e2e`` here, so it cannot land in the fast tier by
accident. ``any_vqa`` and ``any_rrdb`` run a test on the tiny bundle (fast tier) and again on the full-size CLI
export (``e2e``)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
from support import Exported, cli, export_in_process, seeded_checkpoint, tiny_rrdb_net, tiny_vqa_net

if TYPE_CHECKING:
    import torch

E2E_FIXTURES = frozenset({
    "vqa_bundle", "x4plus_bundle",  # below: kvqe-export in a subprocess, full-size Swin-T and RRDBNet
    "sinsr_bundle",  # below: the reduced SinSR's stages exported at FP32 and FP16, gated
    "small_onnx",  # test_sinsr: the reduced SinSR's three stages exported to ONNX
})


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        # the tier, for .ci/durations.py's per-tier times (JUnit XML records it as a property)
        tier = "slow" if item.get_closest_marker("slow") else "e2e" if item.get_closest_marker("e2e") else "fast"
        item.user_properties.append(("tier", tier))


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def coffee_bgr() -> np.ndarray:
    import skimage.data

    return cv2.cvtColor(skimage.data.coffee(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="session")
def student_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state_dict of the vqa-sharpmind-swint layout (seeded random init, as a user checkpoint)."""
    import torch

    from kvqe.models.registry import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "student.pth"
    torch.save(create_model("vqa-sharpmind-swint").state_dict(), path)
    return path


@pytest.fixture(scope="session")
def vqa_bundle(tmp_path_factory: pytest.TempPathFactory, student_checkpoint: Path) -> Path:
    """``kvqe-export vqa-sharpmind-swint --weights CKPT`` built once per session (wide score range, so
    untrained scores are not clipped)."""
    out = tmp_path_factory.mktemp("bundles") / "vqa"
    cli("kvqe-export", "vqa-sharpmind-swint", "--weights", f"model={student_checkpoint}", "--out", str(out),
        "--score-range=-1000,1000", "--json", check_code=0)
    return out


@pytest.fixture(scope="session")
def x4plus_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "x4plus"
    cli("kvqe-export", "realesrgan-x4plus", "--out", str(out), "--formats", "onnx", "--json", check_code=0)
    return out


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
def sinsr_checkpoints(sinsr_small: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reduced nets saved under the official checkpoint names, as a user would pass them."""
    import torch

    out = tmp_path_factory.mktemp("sinsr_ckpt")
    paths = {"unet": out / "SinSR_v1.pth", "vq": out / "autoencoder_vq_f4.pth"}
    torch.save({"state_dict": sinsr_small.unet.state_dict()}, paths["unet"])
    torch.save(sinsr_small.vq.state_dict(), paths["vq"])
    return paths


@pytest.fixture(scope="session")
def sinsr_bundle(sinsr_checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``sinsr`` exported end to end through the Python API: ONNX FP32 (the reference) and FP16 per stage."""
    from sinsr_fixtures import export_small

    out = tmp_path_factory.mktemp("bundles") / "sinsr"
    return out, export_small("sinsr", out, sinsr_checkpoints, precisions=("fp32", "fp16"))

