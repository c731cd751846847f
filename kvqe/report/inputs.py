"""Reading a report's input: the JSON lines or Parquet of a ``kvqe score`` run, or a bundle directory."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kvqe.errors import BackendUnavailableError, BadInputError


def read_score_rows(path: Path) -> list[dict[str, Any]]:
    """One dict per scored source from ``kvqe score --json`` lines or a Parquet file of the same rows."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise BackendUnavailableError("reading Parquet needs pyarrow; install it with: pip install pyarrow") from None
        return [dict(row) for row in pq.read_table(path).to_pylist()]
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise BadInputError(f"{path}:{number}: not a JSON line ({error.msg})") from None
        if not isinstance(row, dict) or "source" not in row:
            raise BadInputError(f"{path}:{number}: not a kvqe score record (no 'source')")
        rows.append(row)
    if not rows:
        raise BadInputError(f"{path}: no score records")
    return rows


def read_manifest(folder: Path) -> dict[str, Any]:
    """A bundle directory's manifest.json; BadInputError when it has none."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise BadInputError(f"{folder}: not a bundle directory (no manifest.json)")
    data: dict[str, Any] = json.loads(manifest.read_text(encoding="utf-8"))
    return data
