"""One distillation run end to end: labels and splits -> cached inputs -> training -> test figures ->
checkpoint with its record."""
from __future__ import annotations

import csv
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvqe.errors import BadInputError
from kvqe.files import sha256_file
from kvqe.training.distill import (
    DistillConfig,
    agreement,
    config_record,
    load_clips,
    load_student,
    predict,
    save_checkpoint,
    source_of,
    train,
)

SPLITS = ("train", "val", "test")


def read_teacher_labels(path: Path) -> dict[str, float]:
    """``filename,score`` rows (KVQ truth.csv form; a header row is skipped)."""
    if not path.is_file():
        raise BadInputError(f"labels file not found: {path}")
    labels: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or row[0].strip().lower() in ("filename", "file", "video", "name"):
                continue
            try:
                labels[row[0].strip()] = float(row[1])
            except (IndexError, ValueError):
                raise BadInputError(f"{path}:{number}: expected filename,score, got {row}") from None
    if len(labels) < 4:
        raise BadInputError(f"{path} holds {len(labels)} labelled videos; distillation needs many more")
    return labels


def assign_splits(names: list[str], splits_file: Path | None) -> dict[str, list[str]]:
    """Split by source: from ``splits.json`` (source names per split) when given, else by a hash of the
    source name (80/10/10), so every version of a source lands in the same split."""
    if splits_file is not None:
        by_source = json.loads(splits_file.read_text(encoding="utf-8"))
        lookup = {source: split for split in SPLITS for source in by_source.get(split, [])}
        unknown = sorted({source_of(n) for n in names} - set(lookup))
        if unknown:
            raise BadInputError(f"{splits_file} does not place sources {', '.join(unknown[:5])}")
        return {split: sorted(n for n in names if lookup[source_of(n)] == split) for split in SPLITS}
    buckets: dict[str, list[str]] = {split: [] for split in SPLITS}
    for name in sorted(names):
        slot = int(hashlib.sha256(source_of(name).encode()).hexdigest()[:8], 16) % 10
        buckets["train" if slot < 8 else "val" if slot == 8 else "test"].append(name)
    return buckets


def _thinned(history: list[dict[str, Any]], entries: int = 20) -> list[dict[str, Any]]:
    """About ``entries`` evenly spaced epochs of the history, always with the first and the last."""
    step = max(1, len(history) // entries)
    return [h for i, h in enumerate(history) if i % step == 0 or i == len(history) - 1]


def run_distillation(labels_file: Path, videos: Path, out: Path, config: DistillConfig, *, splits_file: Path | None,
                     cache: Path, limit: int | None = None, teacher: dict[str, Any] | None = None,
                     init: Path | None = None, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Train a student on the teacher's labels (from scratch, or fine-tuning the heads of the checkpoint
    ``init``) and save it at ``out``; returns the run record (``teacher``: what made the labels, e.g. the set
    manifest's teacher entry; its ``units`` name the bundle's scores)."""
    started = time.perf_counter()
    labels = read_teacher_labels(labels_file)
    splits = assign_splits(sorted(labels), splits_file)
    if limit is not None:
        splits = {split: names[:limit] for split, names in splits.items()}
    if not splits["train"] or not splits["val"]:
        raise BadInputError("distillation needs videos in both the train and val splits")
    progress(f"preparing inputs: {', '.join(f'{k} {len(v)}' for k, v in splits.items())} videos")
    clips = {split: load_clips(names, labels, videos, config, cache, progress) for split, names in splits.items()}
    model, history = train(clips["train"], clips["val"], config, progress,
                           init=load_student(init) if init is not None else None)
    test = agreement(predict(model, clips["test"]), clips["test"]) if len(clips["test"]) >= 2 else None
    record = run_record(config, labels_file, teacher, {k: len(v) for k, v in splits.items()}, history, test)
    record["seconds"] = round(time.perf_counter() - started, 1)
    if init is not None:
        record["init"] = {"file": init.name, "sha256": sha256_file(init)}
    save_checkpoint(model, out, record)
    return record


def run_record(config: DistillConfig, labels_file: Path, teacher: dict[str, Any] | None, splits: dict[str, int],
               history: list[dict[str, Any]], test: Any) -> dict[str, Any]:
    """How a checkpoint was made (command, config, labels, teacher, split sizes, thinned history, test figures)."""
    return {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]]),
        "config": config_record(config), "labels": labels_file.name, **({"teacher": teacher} if teacher else {}),
        "splits": splits, "history": _thinned(history), "test": test,
    }
