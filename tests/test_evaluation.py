"""KVQ evaluation: metrics on hand-computed cases, the labels and pairs readers, `kvqe eval` end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from support import BIKES, BUNNY, CARPHONE, Exported, cli, json_lines, make_clip, needs_ffmpeg

from kvqe.errors import BadInputError
from kvqe.evaluation import Pair, evaluate, final_score, rank_accuracy, read_labels, read_pairs

LABELS = {"a.mp4": 1.0, "b.mp4": 2.0, "c.mp4": 3.0, "d.mp4": 4.0}


def scores(*values: float) -> dict[str, float]:
    return dict(zip(LABELS, values, strict=True))


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- metrics --------------------------------------------------------------------------------------------
def test_monotone_but_not_linear_predictions() -> None:
    result = evaluate(scores(1, 2, 3, 10), LABELS)
    assert result["srocc"] == pytest.approx(1.0) and result["krocc"] == pytest.approx(1.0)
    # x - mean = (-3, -2, -1, 6), y - mean = (-1.5, -0.5, 0.5, 1.5): 14 / sqrt(50 * 5)
    assert result["plcc"] == pytest.approx(14 / math.sqrt(250))
    assert result["rmse"] == pytest.approx(3.0)  # errors (0, 0, 0, 6)
    assert (result["videos"], result["pairs_homologous"], result["pairs_nonhomologous"]) == (4, 0, 0)
    assert result["rank1"] is None and result["rank2"] is None and result["final"] is None


def test_reversed_predictions() -> None:
    result = evaluate(scores(4, 3, 2, 1), LABELS)
    assert [result[k] for k in ("srocc", "plcc", "krocc")] == pytest.approx([-1.0, -1.0, -1.0])
    assert result["rmse"] == pytest.approx(math.sqrt(5))  # errors (3, 1, 1, 3)


def test_tied_predictions() -> None:
    result = evaluate(scores(1, 1, 2, 3), LABELS)
    # ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    assert result["srocc"] == pytest.approx(3 / math.sqrt(10))
    # tau-b: 5 concordant, 0 discordant, one pair tied in x: 5 / sqrt((6 - 1) * 6)
    assert result["krocc"] == pytest.approx(5 / math.sqrt(30))
    # x - mean = (-.75, -.75, .25, 1.25): 3.5 / sqrt(2.75 * 5)
    assert result["plcc"] == pytest.approx(3.5 / math.sqrt(13.75))
    assert result["rmse"] == pytest.approx(math.sqrt(3 / 4))


def test_constant_predictions_leave_correlations_undefined() -> None:
    pairs = [Pair("a.mp4", "b.mp4", 1, "homologous"), Pair("c.mp4", "d.mp4", 2, "nonhomologous")]
    result = evaluate(scores(5, 5, 5, 5), LABELS, pairs)
    assert result["srocc"] is None and result["plcc"] is None and result["krocc"] is None
    assert (result["rank1"], result["rank2"], result["final"]) == (1.0, 0.0, None)
    json.dumps(result, allow_nan=False)


def test_rank_accuracy_counts_ties_as_video1_preferred() -> None:
    values = {"a": 1.0, "b": 1.0, "c": 2.0}
    pairs = [Pair("a", "b", 1, "homologous"), Pair("a", "b", 2, "homologous"),
             Pair("c", "a", 1, "homologous"), Pair("a", "c", 2, "homologous")]
    assert rank_accuracy(pairs, values) == pytest.approx(3 / 4)
    assert math.isnan(rank_accuracy([], values))
    with pytest.raises(BadInputError, match=r"2 video\(s\) in the rank pairs have no score: x, y"):
        rank_accuracy([Pair("a", "x", 1, "homologous"), Pair("y", "x", 1, "homologous")], values)


def test_final_score_arithmetic() -> None:
    pairs = [Pair("a.mp4", "b.mp4", 2, "homologous"), Pair("c.mp4", "d.mp4", 1, "homologous"),
             Pair("d.mp4", "a.mp4", 1, "nonhomologous")]
    result = evaluate(scores(1, 2, 3, 10), LABELS, pairs)
    assert (result["rank1"], result["rank2"]) == (0.5, 1.0)
    expected = 0.45 * 1.0 + 0.45 * (14 / math.sqrt(250)) + 0.05 * 0.5 + 0.05 * 1.0
    assert result["final"] == pytest.approx(expected)
    assert final_score({"srocc": 1.0, "plcc": 1.0, "rank1": 0.5, "rank2": 1.0}) == pytest.approx(0.975)
    assert final_score({"srocc": 1.0, "plcc": 1.0, "rank1": 0.5, "rank2": None}) is None


def test_predictions_match_labels_by_basename_and_every_label_needs_one() -> None:
    result = evaluate({f"/data/{k}": v for k, v in scores(1, 2, 3, 4).items()}, LABELS)
    assert result["srocc"] == pytest.approx(1.0)
    many = {f"v{i}.mp4": float(i) for i in range(8)}
    with pytest.raises(BadInputError, match=r"7 labelled video\(s\) have no prediction: v1.mp4.* and 2 more"):
        evaluate({"v0.mp4": 0.0}, many)


# -- labels ---------------------------------------------------------------------------------------------
def test_read_labels_with_and_without_header(tmp_path: Path) -> None:
    truth = write(tmp_path / "truth.csv", "filename,score\ntrain/a.mp4,3.5\nb.mp4, 2\n\n")
    assert read_labels(truth) == {"a.mp4": 3.5, "b.mp4": 2.0}
    bare = write(tmp_path / "bare.csv", "a.mp4,3.5\nb.mp4,2\n")
    assert read_labels(bare) == {"a.mp4": 3.5, "b.mp4": 2.0}
    swapped = write(tmp_path / "swapped.csv", "score,filename\n3.5,a.mp4\n")
    assert read_labels(swapped) == {"a.mp4": 3.5}


@pytest.mark.parametrize(("text", "message"), [
    ("filename,score\na.mp4,3\nx/a.mp4,4\n", r"bad.csv:3: a.mp4 is labelled twice \(first on line 2\)"),
    ("filename,score\na.mp4,3\nb.mp4,good\n", r"bad.csv:3: expected a file name and a numeric score"),
    ("filename,score\na.mp4,nan\n", r"bad.csv:2: expected a file name and a numeric score"),
    ("filename,mos\na.mp4,3\n", r"bad.csv:1: the header 'filename,mos' has no score column"),
    ("filename,score\na.mp4\n", r"bad.csv:2: expected filename,score"),
    ("a.mp4\n", r"bad.csv:1: expected filename,score"),
    ("filename,score\n", r"no labels"),
])
def test_read_labels_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        read_labels(write(tmp_path / "bad.csv", text))


def test_read_labels_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such file"):
        read_labels(tmp_path / "nope.csv")


# -- pairs ----------------------------------------------------------------------------------------------
def test_read_pairs_csv(tmp_path: Path) -> None:
    named = write(tmp_path / "pairs.csv", "rank,video1,video2,kind\n1,x/a.mp4,b.mp4,homologous\n"
                                          "2,c.mp4,d.mp4,nonhomologous\n2.0,a.mp4,d.mp4,nonsource\n")
    assert read_pairs(named) == [Pair("a.mp4", "b.mp4", 1, "homologous"),
                                 Pair("c.mp4", "d.mp4", 2, "nonhomologous"),
                                 Pair("a.mp4", "d.mp4", 2, "nonhomologous")]
    bare = write(tmp_path / "bare.csv", "a.mp4,b.mp4,2\nc.mp4,d.mp4,1,nonhomologous\n")
    assert read_pairs(bare) == [Pair("a.mp4", "b.mp4", 2, "homologous"),
                                Pair("c.mp4", "d.mp4", 1, "nonhomologous")]


@pytest.mark.parametrize(("text", "message"), [
    ("video1,video2\na.mp4,b.mp4\n", r"p.csv:1: the header 'video1,video2' has no rank column"),
    ("video1,video2,rank\na.mp4,b.mp4,3\n", r"p.csv:2: rank must be 1 \(video1 is better\) or 2 .* got '3'"),
    ("a.mp4,b.mp4,1\na.mp4,c.mp4,first\n", r"p.csv:2: rank must be 1"),
    ("a.mp4,b.mp4,1,same\n", r"p.csv:1: kind must be homologous or nonhomologous, got 'same'"),
    ("a.mp4,b.mp4,1\nc.mp4,2\n", r"p.csv:2: expected video1,video2,rank\[,kind\]"),
    ("a.mp4,b.mp4\n", r"p.csv:1: expected video1,video2,rank\[,kind\]"),
])
def test_read_pairs_rejects_bad_csv(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        read_pairs(write(tmp_path / "p.csv", text))


def write_workbook(path: Path, sheets: dict[str, list[tuple]]) -> Path:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def test_read_pairs_xlsx_as_kvq_ships_it(tmp_path: Path) -> None:
    path = write_workbook(tmp_path / "rank-pair-val.xlsx", {
        "source": [("video1", "video2", "rank"), ("a.mp4", "b.mp4", 1), ("c.mp4", "d.mp4", 2)],
        "nonsource": [("name_a", "name_b", "label"), ("a.mp4", "d.mp4", 2.0)],
        "notes": [("anything",)],
    })
    assert read_pairs(path) == [Pair("a.mp4", "b.mp4", 1, "homologous"),
                                Pair("c.mp4", "d.mp4", 2, "homologous"),
                                Pair("a.mp4", "d.mp4", 2, "nonhomologous")]
    headerless = write_workbook(tmp_path / "bare.xlsx", {"nonsource": [("a.mp4", "b.mp4", 1)]})
    assert read_pairs(headerless) == [Pair("a.mp4", "b.mp4", 1, "nonhomologous")]


def test_read_pairs_rejects_bad_xlsx(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match=r"no 'source' or 'nonsource' sheet.*it has: Sheet1"):
        read_pairs(write_workbook(tmp_path / "other.xlsx", {"Sheet1": [("a.mp4", "b.mp4", 1)]}))
    bad_rank = write_workbook(tmp_path / "rank.xlsx",
                              {"source": [("video1", "video2", "rank"), ("a", "b", 0)]})
    with pytest.raises(BadInputError, match=r"rank.xlsx\[source\]:2: rank must be 1"):
        read_pairs(bad_rank)
    with pytest.raises(BadInputError, match="not a readable XLSX workbook"):
        read_pairs(write(tmp_path / "fake.xlsx", "video1,video2,rank\n"))


# -- kvqe eval ------------------------------------------------------------------------------------------
@needs_ffmpeg
def test_kvqe_eval_matches_evaluate_on_kvqe_score(tiny_vqa: Exported, tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    clips = [make_clip(videos, source, frames=30, size=(160, 128), fps=15, name=f"{source.stem}.mp4")
             for source in (CARPHONE, BIKES, BUNNY)]
    names = [clip.name for clip in clips]
    labels_csv = write(tmp_path / "truth.csv", "filename,score\n" + "".join(
        f"kvq/{name},{value}\n" for name, value in zip(names, (3.0, 4.5, 2.0), strict=True)))
    pairs_csv = write(tmp_path / "pairs.csv", f"video1,video2,rank,kind\n{names[0]},{names[1]},2,homologous\n"
                                              f"{names[2]},{names[1]},1,nonhomologous\n")
    records = json_lines(cli("kvqe", "eval", "--bundle", str(tiny_vqa.bundle), "--labels", str(labels_csv), "--pairs",
                             str(pairs_csv), "--videos", str(videos), "--json", check_code=0))
    *per_video, summary = records
    assert [Path(r["source"]).name for r in per_video] == names
    assert [r["label"] for r in per_video] == [3.0, 4.5, 2.0]

    scored = json_lines(cli("kvqe", "score", *map(str, clips), "--bundle", str(tiny_vqa.bundle), "--json",
                            check_code=0))
    predictions = {Path(r["source"]).name: r["score"] for r in scored}
    assert {Path(r["source"]).name: r["score"] for r in per_video} == pytest.approx(predictions)
    expected = evaluate(predictions, read_labels(labels_csv), read_pairs(pairs_csv))
    assert summary == pytest.approx({**expected, "failed": 0})
    assert (summary["videos"], summary["pairs_homologous"], summary["pairs_nonhomologous"]) == (3, 1, 1)
    assert summary["final"] is not None

    # a labelled video that is missing: an error line, the others evaluated, exit 2
    write(labels_csv, labels_csv.read_text() + "gone.mp4,1.0\n")
    result = cli("kvqe", "eval", "--bundle", str(tiny_vqa.bundle), "--labels", str(labels_csv),
                 "--videos", str(videos), check_code=2)
    text = result.stdout.decode()
    assert "gone.mp4: error: no such file" in result.stderr.decode() and "videos 3 (failed 1)" in text
    assert f"SROCC  {expected['srocc']:.4f}" in text and "final  n/a" in text


def test_kvqe_eval_refuses_pairs_of_unlabelled_videos(tmp_path: Path) -> None:
    labels_csv = write(tmp_path / "truth.csv", "a.mp4,1\nb.mp4,2\n")
    pairs_csv = write(tmp_path / "pairs.csv", "a.mp4,zzz.mp4,1\n")
    result = cli("kvqe", "eval", "--bundle", str(tmp_path), "--labels", str(labels_csv),
                 "--pairs", str(pairs_csv), "--json", check_code=2)
    assert "not labelled" in json_lines(result)[0]["error"] and b"zzz.mp4" in result.stderr
