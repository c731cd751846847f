"""The distillation data on a tiny build: real clips, real encoders, the VMAF teacher."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from support import needs_ffmpeg

from kvqe.sdk.sources import open_source
from kvqe.training.content import make_sources
from kvqe.training.dataset_build import build_dataset
from kvqe.training.ladder import LADDER, render
from kvqe.training.teacher import VmafTeacher

pytest.importorskip("vmaf_torch")
pytestmark = needs_ffmpeg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distill")
    build_dataset(out, tiny=True, frame_step=5)
    return out


def test_tiny_build_writes_labels_splits_and_pairs(tiny: Path) -> None:
    rows = list(csv.reader((tiny / "labels.csv").open()))
    assert rows[0] == ["filename", "score"] and len(rows) == 1 + 3 * 4
    scores = {name: float(score) for name, score in rows[1:]}
    assert all(0 <= s <= 100 for s in scores.values())
    splits = json.loads((tiny / "splits.json").read_text())
    placed = [name for names in splits.values() for name in names]
    assert sorted(placed) == sorted({n.split("__")[0] for n in scores}) and len(placed) == len(set(placed))
    pairs = list(csv.DictReader((tiny / "pairs.csv").open()))
    assert pairs and all(p["rank"] in ("1", "2") and p["kind"] in ("homologous", "nonhomologous") for p in pairs)
    for pair in pairs:
        better = pair["video1"] if pair["rank"] == "1" else pair["video2"]
        worse = pair["video2"] if pair["rank"] == "1" else pair["video1"]
        assert scores[better] >= scores[worse] + 5.0


def test_teacher_follows_the_crf_ladder_and_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    scores = {name: float(s) for name, s in list(csv.reader((tiny / "labels.csv").open()))[1:]}
    for source in ("bunny0", "bunny1"):
        ladder = [scores[f"{source}__x264_crf{crf}.mp4"] for crf in (16, 34, 47)]
        assert ladder == sorted(ladder, reverse=True) and ladder[0] > 90 > ladder[-1] + 40, ladder
    again = tmp_path / "again"
    build_dataset(again, tiny=True, frame_step=5)
    assert (again / "labels.csv").read_text() == (tiny / "labels.csv").read_text()


def test_identical_video_scores_about_100_and_versions_keep_size_and_length(tiny: Path) -> None:
    source = make_sources(tiny / "pristine", tiny=True)[0]
    teacher = VmafTeacher(frame_step=5)
    own = teacher.per_frame(source.path, source.path, source.width, source.height)
    assert np.all(own > 97), own
    video = render(source, LADDER[10], tiny)  # down-up scaling by 2 then x264: size must come back
    with open_source(video) as frames, open_source(source.path) as reference:
        got = [f.image.shape for f in frames]
        want = [f.image.shape for f in reference]
    assert got == want
