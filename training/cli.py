"""``kvqe distill``: train the no-reference student on a teacher's scores (torch is imported lazily)."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
@click.option("--sources", type=click.Path(path_type=Path), default=None,
              help="Adapt to your catalogue: a folder of your reference videos -> kvqe's ladder of encodes, "
                   "labelled by --teacher, split by source (the set goes to --data, default OUT-set/); the "
                   "student starts from --init and is compared with it on the held-out sources.")
@click.option("--ladder", type=click.Choice(["full", "short"]), default="full", show_default=True,
              help="With --sources: the full ladder of 18 versions per source, or 4 (quick runs).")
@click.option("--init", type=click.Path(path_type=Path), default=None,
              help="Fine-tune the heads of this student checkpoint  [default with --sources: the shipped one]")
@click.option("--bundle-out", type=click.Path(path_type=Path), default=None,
              help="Also export the checkpoint as a deployable vqa-student bundle here (kvqe-export's path).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Checkpoint to write (.pth).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Training epochs  [default: the trainer's, DistillConfig.epochs]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=2), default=None, help="At most N videos per split (quick runs).")
@click.option("--cache", type=click.Path(path_type=Path), default=None, help="Input cache (default: OUT's folder).")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def distill(data: Path | None, frame_step: int, teacher: str | None, labels: Path | None, videos: Path | None,
            splits: Path | None, sources: Path | None, ladder: str, init: Path | None, bundle_out: Path | None,
            out: Path, epochs: int | None, seed: int, limit: int | None, cache: Path | None, as_json: bool) -> None:
    """Distil a teacher's scores into a vqa-student checkpoint (then: kvqe-export vqa-student --weights),
    or, with --sources, adapt the shipped student to your own videos in one command."""
    if importlib.util.find_spec("torch") is None:
        raise missing_extra("torch", "export")
    from kvqe.training.distill import DistillConfig
    from kvqe.training.run import run_distillation

    def progress(message: str) -> None:
        click.echo(f"kvqe distill: {message}", err=True)

    if sources is not None:
        if labels is not None or videos is not None or splits is not None:
            raise BadInputError("--sources labels your videos with a VMAF teacher; --labels/--videos/--splits "
                                "bring another teacher's scores instead")
        _adapt(sources, data or out.parent / f"{out.stem}-set", ladder, teacher, frame_step, init, out, bundle_out,
               epochs, seed, cache, as_json, progress)
        return
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
    if init is not None:
        from kvqe.training.adapt import fine_tune_config

        config = fine_tune_config(epochs, seed)
    else:
        config = DistillConfig(seed=seed) if epochs is None else DistillConfig(epochs=epochs, seed=seed)
    record = run_distillation(labels, videos, out, config, splits_file=splits, teacher=teacher_record,
                              cache=cache or out.parent / ".kvqe-distill-cache", limit=limit, init=init,
                              progress=progress)
    if bundle_out is not None:
        from kvqe.training.adapt import export_bundle

        record["bundle"] = _bundle(export_bundle(out, bundle_out, progress), bundle_out)
    last = record["history"][-1]
    emit({"out": str(out), **record}, as_json,
         f"{out}: trained {len(record['history'])} epochs in {record['seconds']:.0f} s; last loss {last['loss']:.4f}; "
         f"test vs teacher: {record['test']}")


def _bundle(summary: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The exported bundle's folder and whether every artifact passed its gates."""
    return {"path": str(folder), "deployable": all(a.get("deployable", False) for a in summary.get("artifacts", []))}


def _adapt(sources: Path, data: Path, ladder: str, teacher: str | None, frame_step: int, init: Path | None, out: Path,
           bundle_out: Path | None, epochs: int | None, seed: int, cache: Path | None, as_json: bool,
           progress: Callable[[str], None]) -> None:
    """``--sources``: label the operator's videos, fine-tune, compare on held-out sources, export."""
    from kvqe.training.adapt import (
        adapt,
        export_bundle,
        fine_tune_config,
        operator_sources,
        shipped_checkpoint,
    )
    from kvqe.training.dataset_build import build_dataset

    references = operator_sources(sources)
    start = init or shipped_checkpoint()
    progress(f"labelling {len(references)} reference videos in {data} ({ladder} ladder)")
    manifest = build_dataset(data, seed=seed, split_seed=seed, tiny=ladder == "short", frame_step=frame_step,
                             teacher_name=teacher or DEFAULT_TEACHER, sources=references, progress=progress)
    record = adapt(data, start, out, fine_tune_config(epochs, seed), cache=cache or out.parent / ".kvqe-distill-cache",
                   teacher=manifest["teacher"], progress=progress)
    if bundle_out is not None:
        record["bundle"] = _bundle(export_bundle(out, bundle_out, progress), bundle_out)
    figures = {name: {k: None if v is None else round(v, 4) for k, v in f.items()} for name, f in record["test"].items()}
    emit({"out": str(out), "data": str(data), **record}, as_json,
         f"{out}: adapted from {start.name} in {record['seconds']:.0f} s; held-out sources: "
         + "; ".join(f"{name} SROCC {f['srocc']} PLCC {f['plcc']} final {f['final']}" for name, f in figures.items())
         + (f"\nbundle: {bundle_out}" if bundle_out else "") + f"\nreport: {record['report']}")
