"""KVQ-challenge evaluation: labels (``truth.csv``), rank pairs (CSV or KVQ's XLSX) and the KVQ metrics.

Videos are matched by file basename everywhere. The KVQ final score is
``0.45*SROCC + 0.45*PLCC + 0.05*Rank1 + 0.05*Rank2`` (Rank1: homologous pairs, i.e. two versions of one
source, KVQ's ``source`` sheet; Rank2: non-homologous pairs, its ``nonsource`` sheet). It is None when any
of its four terms is undefined (e.g. no pairs of one kind, or a constant prediction), never a re-weighted
stand-in that could be mistaken for the challenge's figure.
"""
from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, cast

from kvqe.errors import BadInputError
from kvqe.metrics import krocc, plcc, rmse, srocc

KINDS = ("homologous", "nonhomologous")
XLSX_SHEETS = {"source": "homologous", "nonsource": "nonhomologous"}  # KVQ's rank-pair workbook
_KIND_NAMES = {"homologous": "homologous", "nonhomologous": "nonhomologous",
               "non-homologous": "nonhomologous", **XLSX_SHEETS}
_SHOWN = 5  # names listed in an error before "and N more"


@dataclass(frozen=True)
class Pair:
    """Two videos and which one the annotators preferred (``rank`` 1: video1, 2: video2)."""

    video1: str
    video2: str
    rank: int
    kind: str  # "homologous" | "nonhomologous"


def basename(name: str) -> str:
    """The file name of a path written with ``/`` or ``\\`` separators."""
    return PurePosixPath(name.strip().replace("\\", "/")).name


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _number(cell: object) -> float | None:
    """A finite number from a CSV/XLSX cell, or None."""
    if isinstance(cell, bool) or cell is None:
        return None
    try:
        value = float(cell)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _columns(header: list[str], names: Sequence[str], where: str, optional: str | None = None
             ) -> tuple[list[int], int | None]:
    """Indices of ``names`` (and of ``optional``, None when absent) in a header row that names any of them;
    the leading positions when it names none (a header of other names, as KVQ's files may carry)."""
    lowered = [cell.strip().lower() for cell in header]
    expected = ",".join(names) + (f"[,{optional}]" if optional else "")
    if not any(name in lowered for name in [*names, *([optional] if optional else [])]):
        if len(header) < len(names):
            raise BadInputError(f"{where}: expected {expected}, got {','.join(header)!r}")
        return list(range(len(names))), len(names) if optional else None
    missing = [name for name in names if name not in lowered]
    if missing:
        raise BadInputError(f"{where}: the header {','.join(header)!r} has no {', '.join(missing)} column; "
                            f"expected {expected}")
    extra = lowered.index(optional) if optional and optional in lowered else None
    return [lowered.index(name) for name in names], extra


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows with their 1-based line numbers."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = [[cell.strip() for cell in row] for row in csv.reader(handle)]
    except FileNotFoundError:
        raise BadInputError(f"no such file: {path}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BadInputError(f"{path}: not a readable UTF-8 CSV file ({exc})") from None
    return [(number, row) for number, row in enumerate(rows, 1) if any(row)]


def read_labels(path: str | Path) -> dict[str, float]:
    """``filename,score`` rows (KVQ ``truth.csv``; the header is optional) -> {basename: score}.

    A first row whose score is not a number is the header; if it names ``filename`` and ``score`` those
    columns are used, else the first two.
    """
    path = Path(path)
    rows = _csv_rows(path)
    if not rows:
        raise BadInputError(f"{path}: no labels (expected filename,score rows)")
    columns = [0, 1]
    if len(rows[0][1]) < 2 or _number(rows[0][1][1]) is None:
        columns, _ = _columns(rows[0][1], ("filename", "score"), f"{path}:{rows[0][0]}")
        rows = rows[1:]
    file_col, score_col = columns
    labels: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for number, row in rows:
        if max(file_col, score_col) >= len(row):
            raise BadInputError(f"{path}:{number}: expected filename,score, got {','.join(row)!r}")
        name, score = basename(row[file_col]), _number(row[score_col])
        if not name or score is None:
            raise BadInputError(f"{path}:{number}: expected a file name and a numeric score, "
                                f"got {row[file_col]!r}, {row[score_col]!r}")
        if name in labels:
            raise BadInputError(f"{path}:{number}: {name} is labelled twice "
                                f"(first on line {first_line[name]})")
        labels[name], first_line[name] = score, number
    if not labels:
        raise BadInputError(f"{path}: no labels (expected filename,score rows)")
    return labels


def _pair(cells: Sequence[object], columns: list[int], kind_col: int | None, kind: str | None,
          where: str) -> Pair:
    if max(columns) >= len(cells):
        raise BadInputError(f"{where}: expected video1,video2,rank[,kind], got {list(cells)}")
    video1, video2 = (basename(str(cells[c] or "")) for c in columns[:2])
    if not video1 or not video2:
        raise BadInputError(f"{where}: a video name is empty")
    rank = _number(cells[columns[2]])
    if rank not in (1.0, 2.0):
        raise BadInputError(f"{where}: rank must be 1 (video1 is better) or 2 (video2 is better), "
                            f"got {cells[columns[2]]!r}")
    if kind is None:
        raw = ""
        if kind_col is not None and kind_col < len(cells):
            raw = str(cells[kind_col] or "").strip().lower()
        kind = _KIND_NAMES.get(raw) if raw else "homologous"
        if kind is None:
            raise BadInputError(f"{where}: kind must be homologous or nonhomologous, got {raw!r}")
    return Pair(video1, video2, int(rank), kind)


def _table_pairs(rows: list[tuple[int, list[Any]]], kind: str | None, where: str) -> list[Pair]:
    """Pairs from rows with an optional header (a first row whose rank cell is not a number)."""
    columns, kind_col = [0, 1, 2], cast(int | None, 3)
    if rows and (len(rows[0][1]) < 3 or _number(rows[0][1][2]) is None):
        header = [str(cell or "") for cell in rows[0][1]]
        columns, kind_col = _columns(header, ("video1", "video2", "rank"), f"{where}:{rows[0][0]}", "kind")
        rows = rows[1:]
    return [_pair(cells, columns, kind_col, kind, f"{where}:{number}") for number, cells in rows]


def _xlsx_pairs(path: Path) -> list[Pair]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except FileNotFoundError:
        raise BadInputError(f"no such file: {path}") from None
    except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
        raise BadInputError(f"{path}: not a readable XLSX workbook ({exc})") from None
    try:
        sheets = [name for name in book.sheetnames if name.strip().lower() in XLSX_SHEETS]
        if not sheets:
            raise BadInputError(f"{path}: no 'source' or 'nonsource' sheet (KVQ's rank-pair layout); "
                                f"it has: {', '.join(book.sheetnames)}")
        pairs: list[Pair] = []
        for name in sheets:
            cells = enumerate(book[name].iter_rows(values_only=True), 1)
            rows = [(number, list(row)) for number, row in cells if any(c not in (None, "") for c in row)]
            pairs += _table_pairs(rows, XLSX_SHEETS[name.strip().lower()], f"{path}[{name}]")
        return pairs
    finally:
        book.close()


def read_pairs(path: str | Path) -> list[Pair]:
    """Rank pairs from a CSV ``video1,video2,rank[,kind]`` (header optional; a missing kind reads as
    homologous) or an XLSX with KVQ's sheets ``source`` (homologous) and ``nonsource`` (non-homologous),
    whose first three columns are video1, video2, rank."""
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _xlsx_pairs(path)
    return _table_pairs(_csv_rows(path), None, str(path))


def unscored(pairs: Iterable[Pair], scored: Iterable[str]) -> list[str]:
    """Videos named by ``pairs`` that are not in ``scored``, in first-seen order."""
    known = set(scored)
    return list(dict.fromkeys(v for p in pairs for v in (p.video1, p.video2) if v not in known))


def rank_accuracy(pairs: Sequence[Pair], scores: Mapping[str, float]) -> float:
    """Fraction of pairs whose preferred video the scores pick (KVQ: predicted 1 when score1 >= score2,
    else 2). NaN for no pairs; a pair naming a video without a score is an error."""
    missing = unscored(pairs, scores)
    if missing:
        raise BadInputError(f"{len(missing)} video(s) in the rank pairs have no score: {_listing(missing)}")
    if not pairs:
        return float("nan")
    hits = sum((1 if scores[p.video1] >= scores[p.video2] else 2) == p.rank for p in pairs)
    return hits / len(pairs)


def _defined(value: float) -> float | None:
    return value if math.isfinite(value) else None


def final_score(figures: Mapping[str, float | None]) -> float | None:
    """KVQ's 0.45*SROCC + 0.45*PLCC + 0.05*Rank1 + 0.05*Rank2; None if any term is undefined."""
    terms = [figures[key] for key in ("srocc", "plcc", "rank1", "rank2")]
    if any(term is None for term in terms):
        return None
    s, p, r1, r2 = (float(term) for term in terms if term is not None)
    return 0.45 * s + 0.45 * p + 0.05 * r1 + 0.05 * r2


def evaluate(predictions: Mapping[str, float], labels: Mapping[str, float],
             pairs: Sequence[Pair] = ()) -> dict[str, Any]:
    """SROCC, PLCC, KROCC, RMSE over the labelled videos, Rank1/Rank2 over the pairs, and KVQ's final score.

    Keys of ``predictions`` and ``labels`` are matched by basename; every labelled video needs a prediction.
    Undefined figures (fewer than two videos, a constant side, no pairs of a kind) are None.
    """
    predicted: dict[str, float] = {}
    for key, value in predictions.items():
        name = basename(key)
        if name in predicted:
            raise BadInputError(f"two predictions for the file name {name}")
        predicted[name] = float(value)
    names = [basename(key) for key in labels]
    if not names:
        raise BadInputError("no labelled videos to evaluate")
    missing = [name for name in names if name not in predicted]
    if missing:
        raise BadInputError(f"{len(missing)} labelled video(s) have no prediction: {_listing(missing)}")
    x = [predicted[name] for name in names]
    y = [float(value) for value in labels.values()]
    ranks = {kind: [p for p in pairs if p.kind == kind] for kind in KINDS}
    rank1, rank2 = (_defined(rank_accuracy(ranks[kind], predicted)) for kind in KINDS)
    figures = {"srocc": _defined(srocc(x, y)), "plcc": _defined(plcc(x, y)), "krocc": _defined(krocc(x, y)),
               "rmse": rmse(x, y), "rank1": rank1, "rank2": rank2}
    return {**figures, "final": final_score(figures),
            "videos": len(names), "pairs_homologous": len(ranks["homologous"]),
            "pairs_nonhomologous": len(ranks["nonhomologous"])}
