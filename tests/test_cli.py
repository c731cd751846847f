"""The command lines end to end: JSON fields, exit codes, tampered bundles, bad inputs, raw stdin."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import BIKES, CARPHONE, Exported, cli, json_lines, needs_ffmpeg, truncated_clip

import kvqe
from kvqe.errors import BadInputError

SAMPLE = Path(__file__).resolve().parents[1] / "kvqe" / "samples" / "astronaut.png"


def tampered_copy(bundle: Path, tmp_path: Path) -> Path:
    copy = tmp_path / bundle.name
    shutil.copytree(bundle, copy)
    onnx_file = copy / "model.fp32.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x40
    onnx_file.write_bytes(bytes(data))
    return copy


def test_x4plus_bundle_info_enhance_and_tamper(any_rrdb: Path, tmp_path: Path) -> None:
    (info,) = json_lines(cli("kvqe", "info", str(any_rrdb), "--json", check_code=0))
    assert info["verified"] and info["model"]["name"] == "realesrgan-x4plus" and info["task"] == "sr"
    assert info["artifacts"][0]["accuracy"]["max_abs_diff"] <= 1e-4
    crop = tmp_path / "crop.png"
    cv2.imwrite(str(crop), cv2.imread(str(SAMPLE))[40:72, 60:108])
    out = tmp_path / "crop_x4.png"
    (record,) = json_lines(cli("kvqe", "enhance", str(crop), "-o", str(out), "--bundle", str(any_rrdb), "--json",
                               check_code=0))
    assert (record["out_width"], record["out_height"], record["backend"]) == (192, 128, "onnxruntime")
    assert cv2.imread(str(out)).shape == (128, 192, 3)

    bad = tampered_copy(any_rrdb, tmp_path)
    result = cli("kvqe", "info", str(bad), "--json", check_code=2)
    assert b"model.fp32.onnx: sha256 mismatch" in result.stderr
    result = cli("kvqe", "enhance", str(crop), "-o", str(tmp_path / "y.png"), "--bundle", str(bad), check_code=2)
    assert b"model.fp32.onnx" in result.stderr and not (tmp_path / "y.png").exists()


def test_vqa_bundle_scores_each_source_and_reports_bad_ones(tiny_vqa: Exported, tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((64, 64), 128, np.uint8))
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    sources = [str(CARPHONE), str(tmp_path / "missing.mp4"), str(text), str(grey), str(BIKES)]
    records = json_lines(cli("kvqe", "score", *sources, "--bundle", str(tiny_vqa.bundle), "--json", check_code=2))
    assert [r["source"] for r in records] == sources
    good = [records[0], records[4]]
    for record in good:
        assert set(record) == {"source", "score", "frames", "backend", "precision", "seconds", "frame_scores",
                               "frame_times", "frame_indices", "duration_s", "width", "height", "fps", "codec",
                               "sampling"}
        assert (record["backend"], record["precision"]) == ("onnxruntime", "fp32")
        assert len(record["frame_scores"]) == len(record["frame_times"]) == record["frames"]
    assert (good[0]["frames"], good[1]["frames"]) == (4, 8)
    assert good[1]["frame_indices"] == [15, 46, 78, 109, 140, 171, 203, 234]  # bikes: 10 s in 8 parts of 1.25 s
    assert good[1]["frame_times"] == pytest.approx([0.6, 1.84, 3.12, 4.36, 5.6, 6.84, 8.12, 9.36])
    assert (good[1]["duration_s"], good[1]["width"], good[1]["height"], good[1]["fps"], good[1]["codec"]) == (
        10.0, 640, 272, 25.0, "h264")
    assert good[1]["sampling"] == {"per_second": 1.0, "max_frames": 8, "how": "sequential"}
    assert "no such file" in records[1]["error"]
    assert "cannot open" in records[2]["error"]
    assert records[3]["conversion"] == "grey to BGR" and "score" in records[3]  # grey images are converted (#34)

    bad = tampered_copy(tiny_vqa.bundle, tmp_path)
    result = cli("kvqe", "score", str(CARPHONE), "--bundle", str(bad), "--json", check_code=2)
    assert b"model.fp32.onnx" in result.stderr


@needs_ffmpeg
def test_raw_frames_on_stdin_score_like_the_file(tiny_vqa: Exported) -> None:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
                         capture_output=True, check=True).stdout
    (piped,) = json_lines(cli("kvqe", "score", "-", "--raw", "176x144", "--fps", str(30000 / 1001), "--bundle",
                              str(tiny_vqa.bundle), "--json", stdin=raw, check_code=0))
    (filed,) = json_lines(cli("kvqe", "score", str(CARPHONE), "--bundle", str(tiny_vqa.bundle), "--json", check_code=0))
    assert piped["frames"] == filed["frames"] == 4
    assert piped["score"] == pytest.approx(filed["score"], abs=1e-4)
    assert piped["frame_times"] == pytest.approx(filed["frame_times"], abs=1e-3)
    (not_y4m,) = json_lines(cli("kvqe", "score", "-", "--bundle", str(tiny_vqa.bundle), "--json", stdin=raw, check_code=2))
    assert "not a YUV4MPEG2 stream" in not_y4m["error"] and "--raw WxH --fps F" in not_y4m["error"]
    result = cli("kvqe", "score", "-", "--raw", "176x144", "--bundle", str(tiny_vqa.bundle), stdin=raw, check_code=2)
    assert b"needs --fps" in result.stderr and not result.stdout  # refused before reading: never 30 assumed
    (cut,) = json_lines(cli("kvqe", "score", "-", "--raw", "176x144", "--fps", "30", "--bundle", str(tiny_vqa.bundle), "--json",
                            stdin=raw[: 176 * 144 * 3 * 20 + 100], check_code=2))
    assert "middle of a frame" in cut["error"]


@needs_ffmpeg
# two layouts in the fast tier; the other chroma layouts with the end-to-end tests
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "gray", *(pytest.param(f, marks=pytest.mark.e2e)
                                                         for f in ("yuv422p", "yuv444p", "yuvj420p"))])
def test_y4m_on_stdin_scores_like_the_file(pix_fmt: str) -> None:
    """Size, rate and colourspace come from the y4m header; the model sees what it sees in the file (measured
    within 0.3 points: ffmpeg and OpenCV upsample chroma a little differently)."""
    y4m = subprocess.run(["ffmpeg", "-v", "error", "-i", str(CARPHONE), "-pix_fmt", pix_fmt, "-f", "yuv4mpegpipe",
                          "-"], capture_output=True, check=True).stdout
    (piped,) = json_lines(cli("kvqe", "score", "-", "--json", stdin=y4m, check_code=0))
    (filed,) = json_lines(cli("kvqe", "score", str(CARPHONE), "--json", check_code=0))
    assert (piped["frames"], piped["width"], piped["height"], piped["codec"]) == (4, 176, 144, "rawvideo")
    assert piped["fps"] == pytest.approx(30000 / 1001) and piped["duration_s"] == pytest.approx(4.004)
    if pix_fmt != "gray":
        assert piped["score"] == pytest.approx(filed["score"], abs=1.0)


def test_a_pipe_given_its_duration_is_sampled_as_the_file(tmp_path: Path) -> None:
    """A pipe declares no length, so it keeps 3-8 keyframes as they arrive; told its duration (``--duration``),
    it gets the file's 8, and a pipe that ends short of it is an error, never a shorter video."""
    y4m = subprocess.run(["ffmpeg", "-v", "error", "-i", str(BIKES), "-f", "yuv4mpegpipe", "-"], capture_output=True,
                         check=True).stdout  # 250 frames, 10 s
    (filed,) = json_lines(cli("kvqe", "score", str(BIKES), "--json", check_code=0))
    (unknown,) = json_lines(cli("kvqe", "score", "-", "--json", stdin=y4m, check_code=0))
    (told,) = json_lines(cli("kvqe", "score", "-", "--duration", "10", "--json", stdin=y4m, check_code=0))
    assert unknown["frames"] < filed["frames"] == 8
    assert told["frame_indices"] == filed["frame_indices"] and told["duration_s"] == pytest.approx(10.0)
    (short,) = json_lines(cli("kvqe", "score", "-", "--duration", "20", "--json", stdin=y4m, check_code=2))
    assert "250 of the 500 frames it declares" in short["error"], short
    for args in (["score", str(BIKES), "--duration", "10"], ["score", "-", "--duration", "nan"]):
        assert "--duration" in cli("kvqe", *args, check_code=2).stderr.decode()
    with pytest.raises(BadInputError, match="declares its own length, 250 frames"):
        kvqe.load("vqa").score(BIKES, duration=10)


def test_y4m_that_cannot_be_read_is_refused_plainly() -> None:
    header = b"YUV4MPEG2 W16 H16 F25:1 C420p10\n"
    (record,) = json_lines(cli("kvqe", "score", "-", "--json", stdin=header + b"FRAME\n" + bytes(768), check_code=2))
    assert "colourspace C420p10 is not supported" in record["error"]
    (record,) = json_lines(cli("kvqe", "score", "-", "--json", stdin=b"YUV4MPEG2 W16 F25:1\n", check_code=2))
    assert "lacks a valid size" in record["error"]
    (record,) = json_lines(cli("kvqe", "score", "-", "--json", stdin=b"YUV4MPEG2 W16 H16 F25:1\nFRAME\n" + bytes(100),
                               check_code=2))
    assert "ended in the middle of frame 0" in record["error"]


def test_folders_globs_and_csv(tmp_path: Path) -> None:
    folder = tmp_path / "uploads"
    (folder / "day2").mkdir(parents=True)
    shutil.copy(CARPHONE, folder / "b.mp4")
    shutil.copy(SAMPLE, folder / "day2" / "a.png")
    (folder / "notes.txt").write_text("not media")
    (tmp_path / "empty").mkdir()
    table = tmp_path / "out" / "scores.csv"
    records = json_lines(cli("kvqe", "score", str(folder), str(tmp_path / "empty"), str(folder / "*.mp4"),
                             str(tmp_path / "*.mkv"), "--csv", str(table), "--json", check_code=2))
    assert [r["source"] for r in records] == [str(folder / "b.mp4"), str(folder / "day2" / "a.png"),
                                              str(tmp_path / "empty"), str(folder / "b.mp4"), str(tmp_path / "*.mkv")]
    assert "directory holds no videos or images" in records[2]["error"] and "no file matches" in records[4]["error"]
    image = records[1]
    assert (image["frames"], image["duration_s"], image["fps"], image["width"]) == (1, None, None, 192)
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["source"] for row in rows] == [r["source"] for r in records]
    assert float(rows[0]["score"]) == pytest.approx(records[0]["score"], abs=1e-6)
    assert rows[0]["frame_scores"].split(" ")[0] == f"{records[0]['frame_times'][0]:.3f}:{records[0]['frame_scores'][0]:.4f}"
    assert (rows[0]["how"], rows[0]["max_frames"], rows[0]["codec"], rows[2]["score"]) == ("sequential", "8", "h264", "")
    assert rows[2]["error"] == records[2]["error"]


def test_per_second_and_max_frames() -> None:
    (record,) = json_lines(cli("kvqe", "score", str(BIKES), "--per-second", "0.5", "--max-frames", "3", "--json",
                               check_code=0))
    assert record["frame_indices"] == [41, 125, 208] and record["sampling"]["how"] == "seek"  # 3 parts of 3.33 s
    assert cli("kvqe", "score", str(BIKES), "--max-frames", "0", check_code=2).returncode == 2


def test_score_uses_the_embedded_student_by_default() -> None:
    (record,) = json_lines(cli("kvqe", "score", str(CARPHONE), "--json", check_code=0))
    assert 0.0 <= record["score"] <= 100.0 and record["frames"] == 4  # one keyframe per second of a 4 s clip


def test_enhance_cli_with_embedded_bundle_and_bad_inputs(tmp_path: Path) -> None:
    out = tmp_path / "x4.png"
    (record,) = json_lines(cli("kvqe", "enhance", str(SAMPLE), "-o", str(out), "--tile", "96", "--json", check_code=0))
    assert (record["width"], record["out_width"], record["frames"]) == (192, 768, 1)
    assert cv2.imread(str(out)).shape == (768, 768, 3)
    rgba = tmp_path / "rgba.png"
    cv2.imwrite(str(rgba), np.zeros((16, 16, 4), np.uint8))
    assert b"alpha" in cli("kvqe", "enhance", str(rgba), "-o", str(tmp_path / "o.png"), check_code=2).stderr.lower()
    cli("kvqe", "enhance", str(tmp_path / "none.png"), "-o", str(tmp_path / "o.png"), check_code=2)
    result = cli("kvqe", "enhance", str(SAMPLE), "-o", str(tmp_path / "o.mp4"), check_code=2)
    assert b"o.mp4: an image input needs an image output name (.bmp, .jpeg" in result.stderr
    result = cli("kvqe", "enhance", str(CARPHONE), "-o", str(tmp_path / "o.png"), check_code=2)
    assert b"o.png: a video input needs a video output name (e.g. .mp4 or .mkv)" in result.stderr
    assert b"the output must not overwrite the input" in cli(
        "kvqe", "enhance", str(out), "-o", str(tmp_path / "." / "x4.png"), check_code=2).stderr
    cli("kvqe", "enhance", str(SAMPLE), "-o", str(tmp_path / "o.png"), "--backend", "nope", check_code=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rgba.png", "x4.png"]


@needs_ffmpeg
def test_a_truncated_video_is_refused_and_leaves_no_output(tmp_path: Path) -> None:
    clip, cut = truncated_clip(tmp_path)
    records = json_lines(cli("kvqe", "score", str(cut), str(clip), "--json", check_code=2))
    assert "truncated" in records[0]["error"] and records[1]["frames"] == 2
    result = cli("kvqe", "enhance", str(cut), "-o", str(tmp_path / "up.mp4"), check_code=2)
    assert b"cut.mp4: the decode stopped after" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "cut.mp4"]


@pytest.mark.e2e  # seven kvqe-export subprocesses, each importing torch (test_export_cli_exit_codes_in_process)
def test_export_cli_errors(student_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert b"unknown model" in cli("kvqe-export", "no-such-model", "--out", str(out), check_code=2).stderr
    assert b"--weights model=" in cli("kvqe-export", "vqa-sharpmind-swint", "--out", str(out), check_code=2).stderr
    result = cli("kvqe-export", "realesr-animevideov3", "--weights", f"model={student_checkpoint}", "--out", str(out),
                 check_code=2)
    assert b"does not match" in result.stderr
    assert b"unknown format" in cli("kvqe-export", "realesr-animevideov3", "--out", str(out), "--formats",
                                    "onnx,coreml", check_code=2).stderr
    assert b"INT8 needs calibration data" in cli("kvqe-export", "realesr-animevideov3", "--out", str(out),
                                                 "--precision", "int8", check_code=2).stderr
    assert b"does not apply to a sr model" in cli("kvqe-export", "realesr-animevideov3", "--out", str(out),
                                                  "--gate", "srcc>=0.9", check_code=2).stderr
    assert b"cannot read gate" in cli("kvqe-export", "realesr-animevideov3", "--out", str(out),
                                      "--gate", "psnr=>35", check_code=2).stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_from_checkpoint_path_with_arch(vqa_export: tuple[Path, dict]) -> None:
    """``kvqe-export CKPT --arch NAME`` (the shared full-size Swin-T export is made this way)."""
    bundle, summary = vqa_export
    assert summary["model"] == "vqa-sharpmind-swint" and summary["artifacts"][0]["metrics"]["max_abs_diff_vs_torch"] <= 1e-4
    (info,) = json_lines(cli("kvqe", "info", str(bundle), "--json", check_code=0))
    assert info["weights"]["files"]["model"]["name"] == "student.pth"


def test_export_list() -> None:
    records = json_lines(cli("kvqe-export", "list", "--json", check_code=0))
    names = {r["name"]: r for r in records}
    assert {"vqa-sharpmind-swint", "realesrgan-x4plus", "realesr-animevideov3", "realesr-general-x4v3"} <= set(names)
    assert names["realesrgan-x4plus"]["params"] == 16_697_987 and names["realesr-animevideov3"]["params"] == 621_424
    assert all({"task", "params", "gflops", "weights_source", "licence"} <= set(r) for r in records)


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"]])
def test_the_cli_starts_without_importing_what_only_some_commands_use(args: list[str]) -> None:
    """Every ``kvqe`` call pays for what the CLI imports: scipy (about 1.5 s) only where a correlation is
    computed, matplotlib only for a report, OpenVINO and Ray only when asked for, torch never."""
    probe = ("import sys; from click.testing import CliRunner; from kvqe.cli import main; "
             f"result = CliRunner().invoke(main, {args!r}); assert result.exit_code == 0, result.output; "
             "print(sorted({'scipy', 'matplotlib', 'torch', 'openvino', 'ray'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
