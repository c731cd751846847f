"""The distillation report: the shipped student and the classic baselines (BRISQUE, NIQE) against the
teacher on one split of a distillation set, with KVQ's metrics, as JSON and a Markdown table.

The student is scored through the runtime (``kvqe.load(bundle).score``), i.e. the exported graph that
ships, not the torch module. BRISQUE and NIQE are lower-is-better, so their scores are negated before the
correlations and rank accuracies (PLCC of a negated score is minus the PLCC of the raw one). NIQE's
pristine model is fitted on the keyframes of the training split's sharp natural-colour pristine clips
(NIQE's model is of sharp natural scenes: the deliberately soft clips and the grey texture photos are
left out; with them the fit describes softness as pristine and NIQE's SROCC falls from 0.38 to -0.17).

Run: ``python -m kvqe.training.report --data DIR --bundle B --out report.md``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from kvqe import metrics
from kvqe.errors import BadInputError
from kvqe.evaluation import Pair, evaluate, read_labels, read_pairs
from kvqe.files import atomic_output_file
from kvqe.sdk.loader import load
from kvqe.training.baselines import brisque_video, fit_niqe_model, keyframe_images, niqe_video
from kvqe.training.content import SOFT_CAMERA, TRAIN_ONLY_PHOTOS, UPLOAD
from kvqe.training.distill import source_of

METRICS = ("srocc", "plcc", "krocc", "rmse", "rank1", "rank2", "final")


def split_videos(data: Path, split: str) -> tuple[dict[str, float], list[Pair]]:
    """Teacher labels and rank pairs of the videos whose source is in ``split`` (from splits.json)."""
    for needed in ("labels.csv", "splits.json", "pairs.csv"):
        if not (data / needed).is_file():
            raise BadInputError(f"{data} is not a distillation set: {needed} is missing")
    sources = set(json.loads((data / "splits.json").read_text(encoding="utf-8")).get(split, []))
    labels = {name: score for name, score in read_labels(data / "labels.csv").items() if source_of(name) in sources}
    if len(labels) < 2:
        raise BadInputError(f"the {split} split of {data} holds {len(labels)} labelled videos")
    pairs = [p for p in read_pairs(data / "pairs.csv") if p.video1 in labels and p.video2 in labels]
    return labels, pairs


def _sharp_natural(source: str) -> bool:
    grey = {Path(file).stem for file in TRAIN_ONLY_PHOTOS}
    camera = source.rsplit("_", 1)[-1]
    return camera not in (SOFT_CAMERA[0], UPLOAD[0]) and source.rsplit("_", 1)[0] not in grey


def scorers(data: Path, bundle: Path) -> dict[str, Callable[[Path], float]]:
    """Higher-is-better video scorers: the student bundle, -BRISQUE and -NIQE (fitted on train pristine)."""
    student = load(bundle)
    train_sources = json.loads((data / "splits.json").read_text(encoding="utf-8"))["train"]
    niqe = fit_niqe_model(image for s in train_sources if _sharp_natural(s)
                          for image in keyframe_images(data / "pristine" / f"{s}.mp4"))
    return {"student": lambda path: student.score(path).score,
            "brisque": lambda path: -brisque_video(path),
            "niqe": lambda path: -niqe_video(niqe, path)}


def build_report(data: Path, bundle: Path, split: str = "test",
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every scorer's KVQ figures against the teacher on ``split``, plus per-video scores."""
    labels, pairs = split_videos(data, split)
    results: dict[str, Any] = {}
    for name, score in scorers(data, bundle).items():
        started = time.perf_counter()
        predictions = {video: score(data / video) for video in labels}
        results[name] = {"figures": evaluate(predictions, labels, pairs), "scores": predictions,
                         "seconds": round(time.perf_counter() - started, 1)}
        progress(f"{name}: {results[name]['figures']}")
    return {"split": split, "videos": len(labels), "sources": sorted({source_of(v) for v in labels}),
            "pairs": len(pairs), "teacher": labels, "results": results}


def markdown_table(report: dict[str, Any]) -> str:
    """One row per scorer, KVQ's metrics as columns."""
    head = "| model | " + " | ".join(m.upper() if m != "final" else "final score" for m in METRICS) + " |"
    rows = [head, "|" + "---|" * (len(METRICS) + 1)]
    for name, result in report["results"].items():
        cells = [("-" if result["figures"][m] is None else f"{result['figures'][m]:.3f}") for m in METRICS]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def per_source_table(report: dict[str, Any], scorer: str = "student") -> str:
    """Where the error is: per source, the teacher's and ``scorer``'s mean score and their SROCC within the
    source (how well the versions of one content are ordered)."""
    teacher, scores = report["teacher"], report["results"][scorer]["scores"]
    rows = [f"| source | videos | teacher mean | {scorer} mean | SROCC within source |", "|---|---|---|---|---|"]
    for source in report["sources"]:
        videos = sorted(v for v in teacher if source_of(v) == source)
        truth, predicted = [teacher[v] for v in videos], [scores[v] for v in videos]
        rows.append(f"| {source} | {len(videos)} | {sum(truth) / len(truth):.1f} | {sum(predicted) / len(predicted):.1f} "
                    f"| {metrics.srocc(predicted, truth):.3f} |")
    return "\n".join(rows)


@click.command()
@click.option("--data", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--bundle", type=click.Path(path_type=Path, exists=True, file_okay=False), required=True)
@click.option("--split", default="test", show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Markdown table; JSON beside it.")
def main(data: Path, bundle: Path, split: str, out: Path) -> None:
    report = build_report(data, bundle, split, progress=lambda m: click.echo(m, err=True))
    with atomic_output_file(out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True))
    table = markdown_table(report)
    with atomic_output_file(out) as tmp:
        tmp.write_text(table + "\n\n" + per_source_table(report) + "\n")
    click.echo(table)


if __name__ == "__main__":
    main()
