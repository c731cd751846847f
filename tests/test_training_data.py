"""The distillation data on a tiny build: real clips, real encoders, the VMAF teacher."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support import child_processes, cli, needs_ffmpeg

from kvqe.errors import BadInputError, KvqeError
from kvqe.export.bundle_builder import ExportRequest, prepare
from kvqe.sdk.loader import embedded_bundle_path
from kvqe.sdk.sources import open_source
from kvqe.training.content import make_sources, upload
from kvqe.training.dataset_build import HOMOLOGOUS_MIN_GAP, _pairs, build_dataset, ensure_dataset, scores_file
from kvqe.training.ladder import LADDER, render
from kvqe.training.report import build_report, per_source_table
from kvqe.training.run import read_teacher_labels
from kvqe.training.teacher import TEACHERS, VmafTeacher, luma_stream, vmaf_score

pytest.importorskip("vmaf_torch")
pytestmark = needs_ffmpeg


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distill")
    build_dataset(out, tiny=True, frame_step=5)
    return out


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_tiny_build_writes_labels_splits_and_pairs(tiny: Path) -> None:
    rows = list(csv.reader((tiny / "labels.csv").open()))
    assert rows[0] == ["filename", "score"] and len(rows) == 1 + 3 * 4
    scores = {name: float(score) for name, score in rows[1:]}
    assert all(0 <= s <= 100 for s in scores.values())
    splits = json.loads((tiny / "splits.json").read_text())
    placed = [name for names in splits.values() for name in names]
    assert sorted(placed) == sorted({n.split("__")[0] for n in scores}) and len(placed) == len(set(placed))
    pairs = list(csv.DictReader((tiny / "pairs.csv").open()))
    assert pairs and all(p["rank"] in ("1", "2") and p["kind"] in ("homologous", "nonhomologous") for p in pairs)
    for pair in pairs:
        better = pair["video1"] if pair["rank"] == "1" else pair["video2"]
        worse = pair["video2"] if pair["rank"] == "1" else pair["video1"]
        assert scores[better] >= scores[worse] + 5.0


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_teacher_follows_the_crf_ladder_and_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    scores = {name: float(s) for name, s in list(csv.reader((tiny / "labels.csv").open()))[1:]}
    for source in ("bunny0", "bunny1"):
        ladder = [scores[f"{source}__x264_crf{crf}.mp4"] for crf in (16, 34, 47)]
        assert ladder == sorted(ladder, reverse=True) and ladder[0] > 90 > ladder[-1] + 40, ladder
    again = tmp_path / "again"
    build_dataset(again, tiny=True, frame_step=5)
    assert (again / "labels.csv").read_text() == (tiny / "labels.csv").read_text()


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_identical_video_scores_about_100_and_versions_keep_size_and_length(tiny: Path) -> None:
    source = make_sources(tiny / "pristine", tiny=True)[0]
    teacher = VmafTeacher(frame_step=5)
    own = teacher.per_frame(source.path, source.path, source.width, source.height)
    assert np.all(own > 97), own
    with open_source(source.path) as reference:
        want = [f.image.shape for f in reference]
    by_name = {v.name: v for v in LADDER}
    # down-up scaling by 2 then x264, and a half-size upload transcoded again: size must come back
    for version in (LADDER[10], by_name["upload_half_x264_crf30_x264_crf24"]):
        with open_source(render(source, version, tiny)) as frames:
            assert [f.image.shape for f in frames] == want, version.name
    assert render(source, by_name["orig"], tiny).read_bytes() == source.path.read_bytes()


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_an_uploaded_source_is_one_lossy_encode_of_its_clip(tiny: Path, tmp_path: Path) -> None:
    source = make_sources(tiny / "pristine", tiny=True)[0]
    teacher = VmafTeacher(frame_step=5)
    reference = teacher.reference_frames(source.path, source.width, source.height)
    vmaf = {}
    for crf in (20, 40):
        out = tmp_path / f"upload{crf}.mp4"
        upload(source.path, crf, out)
        with open_source(out) as uploaded, open_source(source.path) as clip:
            assert [f.image.shape for f in uploaded] == [f.image.shape for f in clip]
        vmaf[crf] = float(np.mean(teacher.per_frame(reference, out, source.width, source.height)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload20.mp4", "upload40.mp4"]  # no lossy leftovers
    # the encode is real (not a copy) and its strength shows: CRF 40 costs far more than CRF 20
    assert 85 < vmaf[20] < 99.5 and vmaf[40] < vmaf[20] - 20, vmaf


def test_luma_is_the_stored_y_plane_not_a_full_range_grey(tmp_path: Path) -> None:
    black = tmp_path / "black.mp4"  # limited-range black: Y = 16 (ffmpeg's "gray" output would say 0)
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:size=64x48:duration=0.2:rate=25",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(black)], check=True)
    luma = np.stack(list(luma_stream(black, 64, 48)))
    assert luma.shape == (5, 48, 64) and np.all(luma == 16)


def test_the_teacher_reads_a_local_name_that_looks_like_a_protocol_as_that_file(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    grey = tmp_path / "grey.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=gray:size=64x48:duration=0.2:rate=25",
                    "-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv420p", str(grey)], check=True)
    monkeypatch.chdir(tmp_path)
    shutil.copy(grey, tmp_path / "concat:grey.mp4|grey.mp4")  # FFmpeg would read "grey.mp4" twice
    assert len(list(luma_stream(Path("concat:grey.mp4|grey.mp4"), 64, 48))) == 5


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_vmaf_score_of_a_clip_against_itself_and_a_sampled_clip_keep_consecutive_motion(tiny: Path) -> None:
    reference, distorted = tiny / "pristine" / "bunny0.mp4", tiny / "bunny0__x264_crf34.mp4"
    own, own_frames = vmaf_score(reference, reference, frame_step=5)
    assert own >= 99.0 and len(own_frames) == 5 and min(own_frames) > 97.0, own_frames  # 25 frames, k=5
    _, every = vmaf_score(reference, distorted, frame_step=1)
    _, sampled = vmaf_score(reference, distorted, frame_step=5)
    # the sampled frames score exactly as in the full run: motion still compares consecutive frames
    # (motion between frames 5 apart would inflate them by several points)
    assert np.allclose(sampled, every[::5], atol=1e-3), (sampled, every[::5])


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_streamed_reference_motion_equals_vmaf_torch_on_the_whole_clip(tiny: Path) -> None:
    import torch

    source = make_sources(tiny / "pristine", tiny=True)[0]  # 25 frames: batches of 4 and a last one of 1
    teacher = VmafTeacher(frame_step=5)
    streamed = teacher.reference_frames(source.path, source.width, source.height).motion2
    whole = torch.from_numpy(np.stack(list(luma_stream(source.path, source.width, source.height)))[:, None]
                             .astype(np.float32))
    with torch.no_grad():
        expected = teacher._vmaf.compute_motion2(whole).reshape(-1).numpy()
    assert len(streamed) == 25 and streamed[0] == 0 and streamed[1:].min() > 0
    np.testing.assert_array_equal(streamed, expected)


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_teacher_names_misaligned_and_undecodable_videos(tiny: Path, tmp_path: Path) -> None:
    source = make_sources(tiny / "pristine", tiny=True)[0]
    teacher = VmafTeacher(frame_step=5)
    reference = teacher.reference_frames(source.path, source.width, source.height)
    short = tmp_path / "short.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(source.path), "-frames:v", "20", "-c:v", "libx264",
                    str(short)], check=True)
    with pytest.raises(BadInputError, match="short.mp4: 20 frames do not align with the reference's 25"):
        teacher.per_frame(reference, short, source.width, source.height)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(source.path.read_bytes()[:300])
    try:
        teacher.per_frame(reference, broken, source.width, source.height)
    except KvqeError as error:
        assert "broken.mp4" in str(error)
        # checked while the error and its traceback live: both decoders were stopped, not left to the GC
        assert "ffmpeg" not in child_processes()
    else:
        pytest.fail("an undecodable version was scored")


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_resumed_build_reuses_keyed_scores(tiny: Path) -> None:
    cache = json.loads((tiny / scores_file("vmaf")).read_text())
    labels = (tiny / "labels.csv").read_text()
    build_dataset(tiny, tiny=True, frame_step=5)
    assert json.loads((tiny / scores_file("vmaf")).read_text()) == cache and (tiny / "labels.csv").read_text() == labels
    assert all(len(entry["key"]) == 16 and len(entry["per_frame"]) == 5 for entry in cache.values())


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_vmaf_neg_does_not_reward_a_contrast_boost(tiny: Path, tmp_path: Path) -> None:
    source = make_sources(tiny / "pristine", tiny=True)[0]
    boosted = render(source, {v.name: v for v in LADDER}["contrast_x264_crf28"], tmp_path)
    plain = tiny / f"{source.name}__x264_crf34.mp4"
    scores = {}
    for model in TEACHERS:
        teacher = VmafTeacher(frame_step=5, model=model)
        reference = teacher.reference_frames(source.path, source.width, source.height)
        scores[model] = {video.name: teacher.score(reference, video, source.width, source.height)
                         for video in (source.path, boosted, plain)}
    vmaf, neg = scores["vmaf"], scores["vmaf-neg"]
    assert neg[source.path.name] > 99 and vmaf[source.path.name] > 99  # a clip against itself
    assert abs(neg[plain.name] - vmaf[plain.name]) < 3, scores  # plain compression: about the same judgement
    assert vmaf[boosted.name] - neg[boosted.name] > 8, scores  # the boost's gain is VMAF's, not NEG's


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_distilling_with_another_teacher_relabels_the_set_and_keeps_its_videos(tiny: Path, tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "set"
    shutil.copytree(tiny, copy)
    labels = (copy / "labels.csv").read_text()
    before = read_teacher_labels(copy / "labels.csv")
    videos = {p.name: p.stat().st_mtime_ns for p in copy.iterdir() if p.suffix in (".mp4", ".webm")}
    assert ensure_dataset(copy, teacher_name=None, seed=7, frame_step=1)["teacher"]["name"] == "vmaf"  # as built
    splits = tmp_path / "splits.json"  # the tiny set has two origins: give it a validation split
    splits.write_text(json.dumps({"train": ["bunny0"], "val": ["bunny1"], "test": ["astronaut_pan"]}))
    checkpoint = tmp_path / "neg.pth"
    result = cli("kvqe", "distill", "--data", str(copy), "--teacher", "vmaf-neg", "--splits", str(splits),
                 "--epochs", "2", "--out", str(checkpoint), "--json", check_code=0)
    record = json.loads(result.stdout.decode().splitlines()[-1])
    manifest = json.loads((copy / "manifest.json").read_text())
    assert record["teacher"] == manifest["teacher"] and manifest["teacher"]["name"] == "vmaf-neg"
    assert manifest["teacher"]["frame_step"] == 5 and manifest["seed"] == 0  # the set's own, not the CLI defaults
    assert {p.name: p.stat().st_mtime_ns for p in copy.iterdir() if p.suffix in (".mp4", ".webm")} == videos
    after = read_teacher_labels(copy / "labels.csv")
    assert before.keys() == after.keys() and before != after
    assert all(after[n] <= before[n] + 1.0 for n in before), (before, after)  # NEG never grants a gain
    prepared = prepare(ExportRequest("vqa-student", tmp_path / "bundle", {"model": checkpoint}), lambda _: None)
    assert prepared.output_spec.units == "VMAF v0.6.1 NEG (teacher)"
    vmaf_cache = (copy / scores_file("vmaf")).read_bytes()
    assert json.loads((copy / scores_file("vmaf-neg")).read_text()).keys() == json.loads(vmaf_cache).keys()
    teacher_runs = []
    with monkeypatch.context() as patch:  # back to vmaf: its cached scores are used, nothing is scored again
        patch.setattr(VmafTeacher, "per_frame", lambda *args: teacher_runs.append(args))
        ensure_dataset(copy, teacher_name="vmaf", seed=0, frame_step=5)
    assert not teacher_runs and (copy / scores_file("vmaf")).read_bytes() == vmaf_cache
    assert (copy / "labels.csv").read_text() == labels  # and back, to the same labels


def test_a_labels_file_without_a_manifest_cannot_be_relabelled(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("filename,score\na.mp4,50\n")
    assert ensure_dataset(tmp_path, teacher_name=None, seed=0, frame_step=5) == {}
    with pytest.raises(BadInputError, match="labels.csv but no manifest.json: kvqe cannot tell which teacher"):
        ensure_dataset(tmp_path, teacher_name="vmaf-neg", seed=0, frame_step=5)


def test_pairs_stay_inside_a_split_and_rank_by_the_gap() -> None:
    scores = {"a__1": 90.0, "a__2": 70.0, "a__3": 88.0, "b__1": 60.0, "c__1": 95.0, "c__2": 40.0}
    source_of = {name: name.split("__")[0] for name in scores}
    rows = _pairs(scores, source_of, {"train": ["a", "b"], "val": [], "test": ["c"]}, seed=0)
    for video1, video2, rank, kind in rows:
        assert (kind == "homologous") == (source_of[video1] == source_of[video2])
        assert {source_of[video1], source_of[video2]} <= {"a", "b"} or {source_of[video1], source_of[video2]} == {"c"}
        better, worse = (video1, video2) if rank == 1 else (video2, video1)
        assert scores[better] - scores[worse] >= HOMOLOGOUS_MIN_GAP
    assert ("a__1", "a__3", 1, "homologous") not in rows  # 2 points apart: not ranked


@pytest.mark.e2e  # the module's training set (ffmpeg encodes, VMAF teacher scores)
def test_report_scores_the_student_and_the_baselines_on_one_split(tiny: Path, tmp_path: Path) -> None:
    """The report on the tiny set with astronaut as the test split (the embedded student scores it through
    the runtime; NIQE's pristine model comes from the training split's pristine clips)."""
    data = tmp_path / "set"
    data.mkdir()
    for item in tiny.iterdir():
        if item.name != "splits.json":
            (data / item.name).symlink_to(item)
    (data / "splits.json").write_text(json.dumps({"train": ["bunny0", "bunny1"], "val": [], "test": ["astronaut_pan"]}))
    report = build_report(data, embedded_bundle_path("vqa"))
    assert report["videos"] == 4 and report["sources"] == ["astronaut_pan"]
    assert set(report["results"]) == {"student", "brisque", "niqe"}
    student = report["results"]["student"]["figures"]
    scores = report["results"]["student"]["scores"]
    ladder = [scores[f"astronaut_pan__x264_crf{crf}.mp4"] for crf in (16, 34, 47)]
    assert ladder == sorted(ladder, reverse=True), ladder
    # measured: it ranks blur+CRF 22 (teacher 70.5, student 78.5) above CRF 34 (87.9 vs 64.8), one swap of 4
    assert student["srocc"] > 0.75 and student["rank1"] > 0.8, student
    for result in report["results"].values():
        assert len(result["scores"]) == 4 and all(np.isfinite(list(result["scores"].values())))
    row = per_source_table(report).splitlines()[-1].split(" | ")
    teacher_mean = np.mean(list(report["teacher"].values()))
    assert row[:2] == ["| astronaut_pan", "4"] and float(row[2]) == pytest.approx(teacher_mean, abs=0.05)
    assert float(row[3]) == pytest.approx(np.mean(list(scores.values())), abs=0.05)
    assert float(row[4].rstrip(" |")) == pytest.approx(student["srocc"], abs=5e-4)  # one source: the split's SROCC
    with pytest.raises(BadInputError, match="val split .* holds 0 labelled videos"):
        build_report(data, embedded_bundle_path("vqa"), split="val")
