"""The shipped default VQA bundle: the distilled student, usable with the runtime alone."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from support import BIKES, cli, needs_ffmpeg

import kvqe
from kvqe.bundle import read_bundle
from kvqe.sdk.loader import embedded_bundle_path


def test_default_vqa_bundle_is_the_distilled_student_and_says_how_it_was_made() -> None:
    bundle = read_bundle(embedded_bundle_path("vqa"))
    assert bundle.model_name == "vqa-student" and all(v is None for v in bundle.verify_all().values())
    training = bundle.manifest["training"]
    assert training["command"].startswith("kvqe distill") and training["config"]["seed"] == 0
    assert bundle.output_spec["score_range"] == [0.0, 100.0]
    model = kvqe.load("vqa")
    assert (model.name, model.backend, model.precision) == ("vqa-student", "onnxruntime", "fp32")


@needs_ffmpeg
def test_score_orders_an_x264_crf_ladder_of_unseen_video(tmp_path: Path) -> None:
    """bikes is in the content-disjoint test split: the student never trained on it."""
    ladder = []
    for crf in (18, 28, 38, 48):
        out = tmp_path / f"bikes_crf{crf}.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "1.5", "-t", "3", "-i", str(BIKES), "-c:v", "libx264",
                        "-crf", str(crf), "-pix_fmt", "yuv420p", str(out)], check=True)
        ladder.append(str(out))
    records = [json.loads(line) for line in cli("kvqe", "score", *ladder, "--json", check_code=0).stdout.splitlines()]
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == 4, scores
    assert all(0.0 <= s <= 100.0 for s in scores)
