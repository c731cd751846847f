"""``kvqe report``: a self-contained HTML report of a ``kvqe score`` run or a bundle."""
from __future__ import annotations

from pathlib import Path

import click

from kvqe.clitools import emit, handle_errors
from kvqe.errors import BadInputError
from kvqe.files import atomic_output_file, check_output_path
from kvqe.report.crops import compare_crops
from kvqe.report.inputs import read_manifest, read_score_rows
from kvqe.report.page import bundle_page, scores_page


@click.command("report")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="The HTML file to write.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary line.")
@handle_errors
def report(input_path: Path, output: Path, as_json: bool) -> None:
    """Write a self-contained HTML report of INPUT: the JSON lines or Parquet of a `kvqe score` run (score
    distribution, sortable table, per-video timelines and lowest-frame thumbnails) or a bundle directory
    (each artifact's accuracy record against FP32, its gates and margins; for SR, a crop through FP32 and each
    lower precision side by side)."""
    if not input_path.exists():
        raise BadInputError(f"{input_path}: no such file or directory")
    target = check_output_path(output, source=input_path)
    if input_path.is_dir():
        kind = "bundle"
        manifest = read_manifest(input_path)
        artifacts = manifest.get("artifacts", [])
        crops = (compare_crops(input_path, [(a["backend"], a["precision"]) for a in artifacts])
                 if manifest.get("task") == "sr" else [])
        page = bundle_page(manifest, f"kvqe bundle report: {input_path.name}", crops)
        count = len(manifest.get("artifacts", []))
    else:
        kind = "scores"
        rows = read_score_rows(input_path)
        page = scores_page(rows, f"kvqe score report: {input_path.name}")
        count = len(rows)
    with atomic_output_file(target) as temporary:
        temporary.write_text(page, encoding="utf-8")
    emit({"report": str(target), "input": str(input_path), "kind": kind, "items": count}, as_json,
         f"wrote {target} ({kind}, {count} items)")
