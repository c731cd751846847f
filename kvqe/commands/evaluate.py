"""``kvqe eval``: score labelled videos and report the KVQ challenge's correlations and rank accuracies."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from kvqe.clitools import emit, handle_errors, progress_bar
from kvqe.commands.options import (
    backend_option,
    json_option,
    precision_option,
    require_task,
    undeployable_option,
)
from kvqe.errors import BadInputError, KvqeError
from kvqe.sdk.loader import load


def _figure(value: float | None) -> str:
    """A metric as the table shows it ("n/a" when it could not be computed)."""
    return "n/a" if value is None else f"{value:.4f}"


@click.command("eval")
@click.option("--bundle", required=True, help="VQA bundle directory or embedded name.")
@click.option("--labels", "labels_path", required=True, type=click.Path(path_type=Path),
              help="Labels CSV: filename,score (KVQ truth.csv).")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path), default=None,
              help="Rank pairs: CSV video1,video2,rank[,kind] or KVQ's XLSX (sheets source, nonsource).")
@click.option("--videos", "videos_dir", type=click.Path(path_type=Path), default=None,
              help="Folder holding the labelled videos by file name (default: the labels file's folder).")
@backend_option
@precision_option
@undeployable_option
@json_option
@handle_errors
def evaluate_bundle(bundle: str, labels_path: Path, pairs_path: Path | None, videos_dir: Path | None,
                    backend: str, precision: str | None, allow_undeployable: bool, as_json: bool) -> None:
    """Score every labelled video with the bundle and report SROCC, PLCC, KROCC, RMSE, Rank1, Rank2 and the
    KVQ final score (exit 2 if a video cannot be scored; the others are still evaluated)."""
    from kvqe.evaluation import evaluate, read_labels, read_pairs, unscored

    labels = read_labels(labels_path)
    pairs = read_pairs(pairs_path) if pairs_path else []
    strangers = unscored(pairs, labels)
    if strangers:
        raise BadInputError(f"{pairs_path}: {len(strangers)} video(s) of the pairs are not labelled in "
                            f"{labels_path}: {', '.join(strangers[:5])}")
    folder = videos_dir or labels_path.parent
    if not folder.is_dir():
        raise BadInputError(f"--videos {folder} is not a directory")
    model = load(bundle, backend=backend, precision=precision, allow_undeployable=allow_undeployable)
    require_task(model, "vqa", "kvqe eval")
    scores: dict[str, float] = {}
    with progress_bar(len(labels), "eval") as bar:
        for name, label in labels.items():
            source = str(folder / name)
            try:
                scores[name] = model.score(source).score
            except KvqeError as exc:
                emit({"source": source, "error": str(exc)}, as_json, f"{source}: error: {exc}")
            else:
                if as_json:
                    emit({"source": source, "score": scores[name], "label": label}, True, "")
            bar.update()
    if not scores:
        raise BadInputError(f"none of the {len(labels)} labelled videos could be scored")
    failed = len(labels) - len(scores)
    usable = [p for p in pairs if p.video1 in scores and p.video2 in scores]
    summary = {**evaluate(scores, {name: labels[name] for name in scores}, usable), "failed": failed}
    heading = (f"videos {summary['videos']} (failed {failed}), pairs {summary['pairs_homologous']} homologous"
               f" / {summary['pairs_nonhomologous']} non-homologous")
    table = [f"{label:6s} {_figure(summary[label.lower()])}"
             for label in ("SROCC", "PLCC", "KROCC", "RMSE", "Rank1", "Rank2", "final")]
    text = "\n".join([heading, *table, "(final = 0.45*SROCC + 0.45*PLCC + 0.05*Rank1 + 0.05*Rank2; n/a if a term is)"])
    emit(summary, as_json, text)
    if failed:
        sys.exit(2)
