"""The distillation report: the shipped student against its VMAF teacher on the content-disjoint test
split, beside classic no-reference baselines (BRISQUE, NIQE) scored on the same videos, KVQ-style."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from kvqe.evaluation import evaluate, read_labels, read_pairs
from kvqe.export.registry import get_model
from kvqe.sdk.loader import load
from kvqe.training.baselines import brisque_video, fit_niqe_model, niqe_video
from kvqe.training.run import source_of

NIQE_FRAMES_PER_SOURCE = 6


def _pristine_frames(paths: list[Path]) -> list[Any]:
    frames = []
    for path in paths:
        capture = cv2.VideoCapture(str(path))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        for index in range(0, count, max(1, count // NIQE_FRAMES_PER_SOURCE)):
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            ok, frame = capture.read()
            if ok:
                frames.append(frame)
        capture.release()
    return frames


def build_report(data: Path, bundle: str | Path, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Figures of the student (as the runtime runs it), BRISQUE and NIQE against the teacher on the test split."""
    labels = read_labels(data / "labels.csv")
    splits = json.loads((data / "splits.json").read_text())
    test = {name: score for name, score in labels.items() if source_of(name) in splits["test"]}
    pairs = [p for p in read_pairs(data / "pairs.csv") if p.video1 in test and p.video2 in test]
    model = load(bundle)
    progress(f"scoring {len(test)} test videos with the student")
    student = {name: model.score(data / name).score for name in test}
    progress("scoring with BRISQUE (lower is better: negated for agreement)")
    brisque = {name: -brisque_video(data / name) for name in test}
    progress("fitting NIQE's pristine model on the train split's pristine clips, then scoring")
    niqe_model = fit_niqe_model(_pristine_frames([data / "pristine" / f"{s}.mp4" for s in splits["train"]]))
    niqe = {name: -niqe_video(niqe_model, data / name) for name in test}
    card = get_model("vqa-student").card
    return {
        "test_sources": splits["test"], "test_videos": len(test),
        "student": evaluate(student, test, pairs), "brisque": evaluate(brisque, test, pairs),
        "niqe": evaluate(niqe, test, pairs),
        "student_params": card.params, "student_gflops_per_video": card.gflops, "flops_input": card.flops_input,
        "pairs_note": "homologous pairs: versions of one source whose teacher scores differ by >= 5 VMAF points",
    }


def to_markdown(report: dict[str, Any], training: dict[str, Any]) -> str:
    rows = ["| model | SROCC | PLCC | KROCC | RMSE | Rank1 | Rank2 | KVQ final |", "|---|---|---|---|---|---|---|---|"]

    def cell(value: Any) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    for name in ("student", "brisque", "niqe"):
        f = report[name]
        rmse = cell(f["rmse"]) if name == "student" else "(other scale)"
        rows.append(f"| {name} | {cell(f['srocc'])} | {cell(f['plcc'])} | {cell(f['krocc'])} | {rmse} | "
                    f"{cell(f['rank1'])} | {cell(f['rank2'])} | {cell(f['final'])} |")
    test_line = (f"Test split (content-disjoint): sources {', '.join(report['test_sources'])}; "
                 f"{report['test_videos']} videos; {report['student']['pairs_homologous']} homologous and "
                 f"{report['student']['pairs_nonhomologous']} non-homologous pairs. The student is scored through "
                 "the shipped ONNX bundle, as users run it.")
    cost_line = (f"Student: {report['student_params']:,} params, {report['student_gflops_per_video']} GFLOPs per "
                 f"video ({report['flops_input']}; one multiply-add = one FLOP).")
    training_line = (f"Training: `{training['command']}` (seed {training['config']['seed']}), "
                     f"{len(training['history'])} epochs, {training['seconds']:.0f} s on this machine's 2 CPU cores; "
                     f"splits {training['splits']}.")
    return "\n".join([
        "# Distillation report: vqa-student vs its VMAF v0.6.1 teacher", "", test_line,
        "BRISQUE and NIQE are lower-is-better; they are negated before correlation and ranking.", "",
        *rows, "", cost_line, "", training_line, "", report["pairs_note"] + ".",
    ]) + "\n"
