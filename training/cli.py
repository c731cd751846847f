"""``kvqe distill``: train the no-reference student on a teacher's scores (torch is imported lazily)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import click

from kvqe.clitools import emit, handle_errors
from kvqe.errors import BadInputError, missing_extra
from kvqe.training.teacher import DEFAULT_TEACHER, TEACHERS


@click.command()
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="kvqe's own distillation set (labels.csv, splits.json, videos); built there first if absent.")
@click.option("--frame-step", type=click.IntRange(min=1), default=10, show_default=True,
              help="When building --data: the teacher scores every N-th frame.")
@click.option("--teacher", type=click.Choice(sorted(TEACHERS)), default=None,
              help="The VMAF model that labels --data (relabelled, videos kept, if another one did)  "
                   f"[default: the set's own; {DEFAULT_TEACHER} when building]")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Any teacher's scores as filename,score (KVQ truth.csv form).")
@click.option("--videos", type=click.Path(path_type=Path), default=None, help="Where the labelled videos are.")
@click.option("--splits", type=click.Path(path_type=Path), default=None, help="splits.json (source names per split).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint to write (.pth).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs  [default: the trainer's, DistillConfig.epochs]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=2), default=None, help="At most N videos per split (quick runs).")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Input cache (default: OUT's folder).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def distill(data: Path | None, frame_step: int, teacher: str | None, labels: Path | None, videos: Path | None,
            splits: Path | None, out: Path, epochs: int | None, seed: int, limit: int | None, cache: Path | None,
            as_json: bool) -> None:
    """Distil a teacher's scores into a vqa-student checkpoint (then: kvqe-export vqa-student --weights)."""
    if importlib.util.find_spec("torch") is None:
        raise missing_extra("torch", "export")
    from kvqe.training.distill import DistillConfig
    from kvqe.training.run import run_distillation

    def progress(message: str) -> None:
        click.echo(f"kvqe distill: {message}", err=True)

    if teacher is not None and (data is None or labels is not None):
        raise BadInputError("--teacher labels kvqe's own set (--data DIR); --labels brings another teacher's scores")
    teacher_record = None
    if data is not None:
        from kvqe.training.dataset_build import ensure_dataset

        manifest = ensure_dataset(data, teacher_name=teacher, seed=seed, frame_step=frame_step, progress=progress)
        teacher_record = None if labels else manifest.get("teacher")
        labels, videos = labels or data / "labels.csv", videos or data
        splits = splits or (data / "splits.json" if (data / "splits.json").is_file() else None)
    if labels is None or videos is None:
        raise BadInputError("give --data DIR, or --labels CSV with --videos DIR")
    if teacher_record is None:
        teacher_record = {"labels": labels.name, "units": f"{labels.name} scores (external teacher)"}
    config = DistillConfig(seed=seed) if epochs is None else DistillConfig(epochs=epochs, seed=seed)
    record = run_distillation(labels, videos, out, config, splits_file=splits, teacher=teacher_record,
                              cache=cache or out.parent / ".kvqe-distill-cache", limit=limit, progress=progress)
    last = record["history"][-1]
    emit({"out": str(out), **record}, as_json,
         f"{out}: trained {len(record['history'])} epochs in {record['seconds']:.0f} s; last loss {last['loss']:.4f}; "
         f"test vs teacher: {record['test']}")
