"""``--engine ray`` and ``kvqe.scale`` (issue #27): a local Ray of 2 worker processes gives the scores and images
the local engine gives, records a corrupt file as an error row, writes a Parquet file that reads back; without
Ray the command says how to install it (exit 4)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import kvqe
from kvqe.cli import main
from kvqe.sdk.sources import open_source

SAMPLES = Path(kvqe.__file__).parent / "samples"


def test_missing_ray_exits_4_with_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = CliRunner().invoke(main, ["score", str(SAMPLES / "astronaut.png"), "--engine", "ray"])
    assert result.exit_code == 4
    assert "pip install 'kvqe[ray]'" in result.output


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture
def media(tmp_path: Path) -> Path:
    folder = tmp_path / "media"
    folder.mkdir()
    shutil.copy(SAMPLES / "astronaut_pan.mp4", folder / "a.mp4")
    shutil.copy(SAMPLES / "astronaut.png", folder / "b.png")
    (folder / "c_corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    return folder


@pytest.mark.e2e
def test_scale_scores_equal_local_and_records_the_corrupt_file(local_ray, media: Path, tmp_path: Path) -> None:
    pyarrow_parquet = pytest.importorskip("pyarrow.parquet")
    parquet = tmp_path / "scores.parquet"
    catalogue = tmp_path / "catalogue.txt"  # a list file naming the folder
    catalogue.write_text(f"# the media folder\n\n{media}\n")
    records = kvqe.scale([str(catalogue)], "vqa", actors=2, parquet=parquet, threads=1)
    assert [Path(r["source"]).name for r in records] == ["a.mp4", "b.png", "c_corrupt.mp4"]
    model = kvqe.load("vqa", threads=1)
    for record in records[:2]:
        local = model.score(record["source"])
        assert record["score"] == pytest.approx(local.score, abs=1e-4)
        assert record["frame_scores"] == pytest.approx(local.frame_scores, abs=1e-4)
    assert "score" not in records[2] and "cannot open" in records[2]["error"] and records[2]["exit_code"] == 2
    table = pyarrow_parquet.read_table(parquet)
    assert table.num_rows == 3
    assert {"source", "score", "frame_scores", "frame_times", "error"} <= set(table.column_names)
    rows = table.to_pylist()
    assert rows[0]["frame_scores"] == pytest.approx(records[0]["frame_scores"])
    assert rows[2]["score"] is None and rows[2]["error"] == records[2]["error"]


@pytest.mark.e2e
def test_enhance_on_ray_equals_local(local_ray, tmp_path: Path) -> None:
    images = tmp_path / "in"
    images.mkdir()
    photo = cv2.imread(str(SAMPLES / "astronaut.png"))
    cv2.imwrite(str(images / "a.png"), photo)
    cv2.imwrite(str(images / "b.png"), photo[:64, 32:112])
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=4", "-frames:v", "4",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(images / "c.mp4")], check=True)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["enhance", str(images), "-o", str(out), "--engine", "ray", "--threads", "1",
                                       "--json"])
    assert result.exit_code == 0, result.output
    model = kvqe.load("sr", threads=1)
    for name in ("a.png", "b.png"):
        expected = model.enhance(cv2.imread(str(images / name)))
        got = cv2.imread(str(out / name))
        assert got.shape == expected.shape
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    records = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    video = records["c.mp4"]  # videos are enhanced as local `kvqe enhance` writes them
    assert (video["frames"], video["out_width"], video["out_height"]) == (4, 192, 128)
    with open_source(out / "c.mp4") as frames:
        assert [frame.image.shape for frame in frames] == [(128, 192, 3)] * 4
