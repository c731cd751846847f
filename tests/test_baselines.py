"""Classic baselines on real photos: BRISQUE (the brisque package's SVR) and NIQE (fitted here)."""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import BIKES, CARPHONE

from kvqe.specs import Sampling
from kvqe.training.baselines import (
    KEYFRAMES,
    NiqeModel,
    brisque_score,
    brisque_video,
    fit_niqe_model,
    keyframe_mean,
    niqe_score,
    niqe_video,
)

BLURS = (0, 1, 2, 4)  # Gaussian sigma in pixels
NOISES = (0, 5, 15, 40)  # Gaussian noise sigma in grey levels


def photo(name: str) -> np.ndarray:
    import skimage.data

    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)


def blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma) if sigma else image


def noisy(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def increasing(values: list[float]) -> bool:
    return all(a < b for a, b in itertools.pairwise(values))


def test_brisque_matches_the_packages_own_pipeline(astronaut_bgr: np.ndarray,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The package's score() (with its float() conversion made to tolerate shape-(1,) features, as on
    NumPy < 2.4) gives exactly the wrapper's value."""
    from brisque import BRISQUE

    original = BRISQUE.scale_features
    monkeypatch.setattr(BRISQUE, "scale_features",
                        lambda self, f: original(self, np.array([np.ravel(v)[0] for v in f], dtype=object)))
    expected = BRISQUE(url=False).score(cv2.cvtColor(astronaut_bgr, cv2.COLOR_BGR2RGB))
    assert brisque_score(astronaut_bgr) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_brisque_worsens_along_a_blur_ladder(name: str) -> None:
    image = photo(name)
    values = [brisque_score(blurred(image, sigma)) for sigma in BLURS]
    assert increasing(values), values
    assert values[0] < 20 and values[-1] > 60


def test_brisque_video_is_the_mean_over_keyframes() -> None:
    value = brisque_video(CARPHONE)
    assert np.isfinite(value)
    assert value == pytest.approx(keyframe_mean(CARPHONE, brisque_score, KEYFRAMES))
    assert brisque_video(CARPHONE, Sampling(per_second=1, max_frames=1)) != value


def shifted_tilings(images: list[np.ndarray]) -> Iterator[np.ndarray]:
    """Each photo on four patch grids (offsets of half a patch): more pristine patches from a few photos."""
    for image in images:
        for dy in (0, 48):
            for dx in (0, 48):
                yield image[dy:, dx:]


@pytest.fixture(scope="module")
def niqe_model() -> NiqeModel:
    pristine = [photo(name) for name in ("astronaut", "chelsea", "rocket", "motorcycle", "camera")]
    return fit_niqe_model(shifted_tilings(pristine))


@pytest.mark.parametrize("name", ["coffee", "immunohistochemistry"])
def test_niqe_ranks_blur_and_noise_ladders_of_an_unseen_photo(niqe_model: NiqeModel, name: str) -> None:
    image = photo(name)
    blur = [niqe_score(niqe_model, blurred(image, sigma)) for sigma in BLURS]
    noise = [niqe_score(niqe_model, noisy(image, sigma)) for sigma in NOISES]
    assert increasing(blur), blur
    assert increasing(noise), noise


def test_niqe_model_round_trips_and_rejects_tiny_inputs(niqe_model: NiqeModel, tmp_path: Path) -> None:
    assert niqe_model.mu.shape == (36,) and niqe_model.cov.shape == (36, 36)
    path = tmp_path / "niqe.npz"
    niqe_model.save(path)
    loaded = NiqeModel.load(path)
    np.testing.assert_array_equal(loaded.mu, niqe_model.mu)
    np.testing.assert_array_equal(loaded.cov, niqe_model.cov)
    image = photo("coffee")
    assert niqe_score(loaded, image) == niqe_score(niqe_model, image)
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe_score(niqe_model, image[:90])
    with pytest.raises(ValueError, match="at least 2 textured"):
        niqe_score(niqe_model, np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(ValueError, match="at least 2 textured pristine"):
        fit_niqe_model([np.full((200, 200, 3), 128, np.uint8)])


def test_niqe_video_scores_keyframes(niqe_model: NiqeModel) -> None:
    value = niqe_video(niqe_model, BIKES)
    assert value == pytest.approx(keyframe_mean(BIKES, lambda image: niqe_score(niqe_model, image)))
