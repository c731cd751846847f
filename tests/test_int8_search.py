"""The INT8 search in ``kvqe-export`` (tiny RRDBNet, x4plus's architecture and policy, in this process), the
validation set it is judged on (enough sources and samples, ``--val``), and INT8 against FP32 latency."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support import Exported, export_in_process, tiny_rrdb_net

import kvqe
from kvqe.bundle import manifest_schema
from kvqe.calibration.data import SampleSettings, build_sample_sets
from kvqe.calibration.tasks import SR
from kvqe.errors import BadInputError
from kvqe.export import int8_search
from kvqe.export.bundle_builder import exit_code
from kvqe.export.latency import compare_latency
from kvqe.models.registry import get_model
from kvqe.runtimes import create_runner

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina",
          "camera", "brick", "grass", "gravel", "moon")
SETTINGS = SampleSettings(calib_size=16, sr_validation_crop=64, min_validation_samples=16)


def _photos(folder: Path, names: tuple[str, ...], size: int = 160) -> Path:
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = getattr(skimage.data, name)()
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else cv2.cvtColor(image[..., :3],
                                                                                            cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / f"{name}.png"), image[:size, :size])
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _photos(tmp_path_factory.mktemp("photos"), PHOTOS)


def _int8(summary: dict, backend: str) -> dict:
    return next(a for a in summary["artifacts"] if (a["backend"], a["precision"]) == (backend, "int8"))


def _manifest_int8(out: Path) -> dict[str, dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    jsonschema.Draft202012Validator(manifest_schema()).validate(manifest)
    return {a["backend"]: a for a in manifest["artifacts"] if a["precision"] == "int8"}


@pytest.fixture(scope="module")
def policy_only(tiny_rrdb: Exported, photos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny RRDBNet's INT8 with no search: what its policy alone reaches on the validation set."""
    out = tmp_path_factory.mktemp("policy") / "bundle"
    export_in_process("realesrgan-x4plus", out, tiny_rrdb.checkpoint, tiny_rrdb_net, formats=("onnxruntime-int8",),
                      calib=photos, samples=SETTINGS, search_budget=0.0, gates=("int8:psnr>=99",))
    return _manifest_int8(out)["onnxruntime"]


def test_no_budget_no_search(policy_only: dict) -> None:
    record = policy_only["mixed_precision"]
    assert record["searched"] is False and record["passed"] is False and record["float_layers"] == []
    assert record["policy_figures"]["psnr"] == pytest.approx(policy_only["accuracy"]["metrics"]["psnr"], abs=1e-9)
    assert policy_only["deployable"] is False


@pytest.mark.parametrize("ranking", ["gain", "noise"])
def test_search_keeps_the_fewest_layers_float_that_pass(tiny_rrdb: Exported, photos: Path, policy_only: dict,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         ranking: str) -> None:
    """A gate 1 dB above the policy's INT8: the search keeps some layers float, the artifacts built after it
    pass on their own backends, and the manifest says which layers, why and how the search went."""
    if ranking == "noise":  # the ranking models with hundreds of layers get
        monkeypatch.setattr(int8_search, "GAIN_RANKING_MAX_LAYERS", 0)
    base = policy_only["mixed_precision"]["policy_figures"]
    gate = f"int8:psnr>={base['psnr'] + 1.0:.3f}"
    out = tmp_path / "searched"
    summary = export_in_process("realesrgan-x4plus", out, tiny_rrdb.checkpoint, tiny_rrdb_net,
                                formats=("onnxruntime-int8", "openvino"), precisions=("int8",), calib=photos,
                                samples=SETTINGS, gates=(gate,))
    assert exit_code(summary) == 0, summary
    int8 = _manifest_int8(out)
    record = int8["onnxruntime"]["mixed_precision"]
    layers, candidates = record["float_layers"], record["candidates"]
    assert record["searched"] and record["passed"] and not record["budget_exhausted"]
    assert record["ranking"].startswith("single-layer gain" if ranking == "gain" else "noise added")
    assert 0 < len(layers) < candidates and set(layers) == set(record["scores"])
    assert set(layers) <= set(int8["onnxruntime"]["export"]["float_nodes"])
    steps = record["steps"]
    assert steps[0]["float_layers"] == 0 and not steps[0]["passed"]
    assert min(s["float_layers"] for s in steps if s["passed"]) == len(layers)
    assert all(not s["passed"] for s in steps if s["float_layers"] < len(layers))
    # OpenVINO INT8 is the same QDQ model converted: one choice, judged on both backends at every step, and
    # the figures recorded are those of the backend closer to failing
    assert int8["openvino"]["mixed_precision"] == record and int8["openvino"]["deployable"]
    assert record["runs_on"] == "onnx, openvino" and all("backend" in step["figures"] for step in steps)
    binding = {"onnx": "onnxruntime", "openvino": "openvino"}[record["figures"]["backend"]]
    assert int8[binding]["accuracy"]["metrics"]["psnr"] == pytest.approx(record["figures"]["psnr"])
    assert all(entry["accuracy"]["metrics"]["psnr"] >= base["psnr"] + 1.0 for entry in int8.values())
    for entry in int8.values():
        latency = entry["latency"]
        assert latency["ms"] > 0 and latency["fp32_ms"] > 0
        assert latency["ratio"] == pytest.approx(latency["ms"] / latency["fp32_ms"], abs=1e-3)
    assert _int8(summary, "onnxruntime")["float_layers"] == layers
    model = kvqe.load(out, backend="onnxruntime", precision="int8")
    assert model.enhance(np.full((24, 24, 3), 128, np.uint8)).shape == (96, 96, 3)


def test_validation_takes_enough_sources_and_samples(photos: Path, tmp_path: Path) -> None:
    spec = get_model("realesrgan-x4plus").card.input
    settings = SampleSettings(sr_validation_crop=64)
    calib, valid, record = build_sample_sets(photos, SR, spec, settings)
    # 12 sources: 6 validate (at least 8 wanted, but calibration keeps as many), 32 crops among them
    assert len(record["validation"]["sources"]) == 6 and len(valid) == record["validation"]["samples"] >= 32
    assert len(record["calibration"]["sources"]) == 6 and len(calib) == record["calibration"]["samples"]
    assert not set(record["validation"]["sources"]) & set(record["calibration"]["sources"])
    assert any("from 6 source(s)" in w and "8 or more sources" in w for w in record["warnings"])
    # --val: every --calib source calibrates, the held-out folder validates
    held_out = _photos(tmp_path / "held_out", ("coins", "page", "cell", "clock", "astronaut"))
    _, valid, record = build_sample_sets(photos, SR, spec, settings, validation=held_out)
    assert len(record["calibration"]["sources"]) == len(PHOTOS)
    assert record["validation"]["from"].startswith("--val") and len(record["validation"]["sources"]) == 5
    assert len(valid) >= 32
    assert any("1 file(s) of --val are also in --calib" in w for w in record["warnings"])


def test_val_without_calib_and_negative_budget_are_refused(tiny_rrdb: Exported, photos: Path, tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="--val"):
        export_in_process("realesrgan-x4plus", tmp_path / "a", tiny_rrdb.checkpoint, tiny_rrdb_net, val=photos)
    with pytest.raises(BadInputError, match="--search-budget"):
        export_in_process("realesrgan-x4plus", tmp_path / "b", tiny_rrdb.checkpoint, tiny_rrdb_net,
                          formats=("onnxruntime-int8",), calib=photos, search_budget=-1.0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_sr_int8_gates_the_worst_sample_too() -> None:
    assert [str(g) for g in SR.gates("int8")] == ["psnr>=35", "psnr_min>=30"]


def _matmuls(path: Path, count: int) -> Path:
    """An ONNX model of ``count`` chained 256x256 MatMuls (count 0: an Identity)."""
    weight = helper.make_tensor("w", TensorProto.FLOAT, [256, 256], np.eye(256, dtype=np.float32).ravel().tolist())
    nodes = [helper.make_node("MatMul", [f"t{i}", "w"], [f"t{i + 1}"]) for i in range(count)]
    nodes.append(helper.make_node("Identity", [f"t{count}"], ["y"]))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [256, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_latency_says_which_is_faster(tmp_path: Path) -> None:
    light, heavy = _matmuls(tmp_path / "light.onnx", 0), _matmuls(tmp_path / "heavy.onnx", 40)
    inputs = [np.ones((256, 256), np.float32)] * 2
    fast = compare_latency(create_runner("onnxruntime", light), create_runner("onnxruntime", heavy), inputs)
    slow = compare_latency(create_runner("onnxruntime", heavy), create_runner("onnxruntime", light), inputs)
    assert fast["faster_than_fp32"] and fast["ratio"] < 0.5
    assert not slow["faster_than_fp32"] and slow["ratio"] > 2.0
    assert fast["inputs"] == "2 validation sample(s) of shape [256, 256]" and fast["rounds"] == 3


def test_an_int8_artifact_the_search_judged_is_not_validated_again(tiny_rrdb: Exported, photos: Path,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy passes: the search judged the very artifacts then built (same bytes) on the validation set,
    so their accuracy records reuse those comparisons; only the configurations it did not judge are run."""
    from kvqe.export import records

    judged_again: list[str] = []
    run = records.compare_runs

    def counted(candidate, *args, **kwargs):
        judged_again.append(candidate.name)
        return run(candidate, *args, **kwargs)

    monkeypatch.setattr(records, "compare_runs", counted)
    out = tmp_path / "bundle"
    summary = export_in_process("realesrgan-x4plus", out, tiny_rrdb.checkpoint, tiny_rrdb_net,
                                formats=("onnxruntime-int8", "openvino"), precisions=("fp32", "int8"),
                                calib=photos, samples=SETTINGS, gates=("int8:psnr>=20",))
    assert exit_code(summary) == 0, summary
    assert judged_again == ["openvino"]  # OpenVINO FP32; both INT8 artifacts reuse the search's comparisons
    int8 = _manifest_int8(out)
    for entry in int8.values():
        search = entry["mixed_precision"]
        assert search["passed"] and not search["searched"] and entry["deployable"]
    figures = {backend: entry["accuracy"]["metrics"]["psnr"] for backend, entry in int8.items()}
    binding = min(figures, key=figures.__getitem__)  # the search records the backend closer to failing
    assert int8[binding]["mixed_precision"]["policy_figures"]["psnr"] == figures[binding]
