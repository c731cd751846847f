"""``kvqe distill`` end to end on a tiny real set: an x264 CRF ladder of real clips, labelled by a
stand-in teacher (any ``filename,score`` CSV works); the loss must go down and the checkpoint must load."""
from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from support import BIKES, BUNNY, CARPHONE, cli, make_clip, needs_ffmpeg

from kvqe.export.bundle_builder import ExportRequest, prepare
from kvqe.models.registry import get_model
from kvqe.models.weights.checkpoint import read_state_dict
from kvqe.training.losses import plcc_loss, rank_hinge_loss
from kvqe.training.run import assign_splits, source_of

CRFS = (18, 30, 42, 51)
STUDENT_CHECKPOINT = Path(__file__).resolve().parents[1] / "assets" / "vqa-student.pth"


def test_losses_reward_agreement() -> None:
    target = torch.tensor([10.0, 20.0, 30.0, 40.0])
    assert float(plcc_loss(target * 2 + 1, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(plcc_loss(-target, target)) == pytest.approx(1.0, abs=1e-6)
    assert float(rank_hinge_loss(target, target)) == 0.0
    reversed_pair = torch.tensor([10.0, 20.0, 40.0, 30.0])
    # one misordered pair, counted in both orders, over N(N-1) = 12 ordered pairs
    assert float(rank_hinge_loss(reversed_pair, target)) == pytest.approx(20.0 / 12)


def test_splits_keep_every_version_of_a_source_together(tmp_path: Path) -> None:
    names = [f"src{i}__crf{c}.mp4" for i in range(20) for c in CRFS]
    splits = assign_splits(names, None)
    placed = {source_of(n): split for split, items in splits.items() for n in items}
    assert len(placed) == 20 and sum(map(len, splits.values())) == len(names)
    for split, items in splits.items():
        assert all(placed[source_of(n)] == split for n in items)
    (tmp_path / "splits.json").write_text(json.dumps({"train": [f"src{i}" for i in range(16)], "val": ["src16", "src17"],
                                                      "test": ["src18", "src19"]}))
    assert len(assign_splits(names, tmp_path / "splits.json")["test"]) == 8


@pytest.mark.e2e  # kvqe distill in a subprocess: 12 clips encoded, 6 epochs of the student
@needs_ffmpeg
def test_distill_runs_end_to_end_and_the_loss_goes_down(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    rows = []
    for name, source, size in (("bikes", BIKES, "320x136"), ("bunny", BUNNY, "320x180"), ("phone", CARPHONE, "176x144")):
        for crf in CRFS:
            out = videos / f"{name}__crf{crf}.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), "-t", "2", "-s", size, "-c:v", "libx264",
                            "-crf", str(crf), "-pix_fmt", "yuv420p", str(out)], check=True)
            rows.append((out.name, 100.0 - 1.8 * crf))  # a stand-in teacher: quality falls with CRF
    labels = tmp_path / "labels.csv"
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "score"), *rows])
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"train": ["bikes", "bunny"], "val": ["phone"], "test": []}))
    checkpoint = tmp_path / "student.pth"
    result = cli("kvqe", "distill", "--labels", str(labels), "--videos", str(videos), "--splits", str(splits),
                 "--out", str(checkpoint), "--epochs", "6", "--seed", "0", "--json", check_code=0)
    record = json.loads(result.stdout.decode().splitlines()[-1])
    losses = [epoch["loss"] for epoch in record["history"]]
    assert losses[-1] < losses[0], losses
    assert record["splits"] == {"train": 8, "val": 4, "test": 0} and record["config"]["seed"] == 0
    assert record["teacher"] == {"labels": "labels.csv", "units": "labels.csv scores (external teacher)"}
    entry = get_model("vqa-student")
    module = entry.factory()
    entry.load_weights(module, {"model": checkpoint})
    assert set(read_state_dict(checkpoint)) == set(module.state_dict())
    # the bundle's scores are named after the teacher that made the labels, not the card's default VMAF
    prepared = prepare(ExportRequest("vqa-student", tmp_path / "bundle", {"model": checkpoint}), lambda _: None)
    assert prepared.output_spec.units == "labels.csv scores (external teacher)"
    result = cli("kvqe", "distill", "--labels", str(labels), "--videos", str(videos), "--teacher", "vmaf-neg",
                 "--out", str(tmp_path / "other.pth"), check_code=2)
    assert b"--teacher labels kvqe's own set" in result.stderr and not (tmp_path / "other.pth").exists()


def test_the_embedded_student_keeps_the_units_of_its_card() -> None:
    """Its checkpoint predates teacher records: the card's VMAF v0.6.1 units stand."""
    prepared = prepare(ExportRequest("vqa-student", Path("unused"), {"model": STUDENT_CHECKPOINT}), lambda _: None)
    assert "teacher" not in prepared.provenance["training"]
    assert prepared.output_spec.units == "VMAF v0.6.1 (teacher)"


@needs_ffmpeg
def test_cached_views_are_reused_only_by_the_same_preprocessing(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The view cache is keyed by the runtime's sampling/preprocessing code too: an upgraded kvqe with another
    frame geometry recomputes instead of training on stale views."""
    from kvqe.models.student import CARD
    from kvqe.training import features

    clip = make_clip(tmp_path, CARPHONE, frames=20, size=(176, 144), fps=10)
    cache = tmp_path / "cache"
    cache.mkdir()
    first = features.cached_views(clip, CARD.input, 2, 0, cache)
    again = features.cached_views(clip, CARD.input, 2, 0, cache)
    assert len(list(cache.iterdir())) == 1 and np.array_equal(first, again)
    monkeypatch.setattr(features, "preprocessing_digest", lambda: "another kvqe")
    features.cached_views(clip, CARD.input, 2, 0, cache)
    assert len(list(cache.iterdir())) == 2
