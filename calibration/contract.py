"""The one calibration contract: model-input images plus the transform the runtime applies to them.

Every quantiser consumes a :class:`SampleSet` through a small adapter (ONNX Runtime's
``CalibrationDataReader``, NNCF's ``Dataset``); TensorRT consumes the QDQ ONNX that calibration made.
The images are stored before normalisation (uint8, model colour order and geometry), so a set is small
enough to travel inside a bundle and ``kvqe verify`` can rebuild the exact tensors on the target.

A stage inside a pipeline (a diffusion denoiser, say) is calibrated with the same contract: its set is the
pipeline's set with a ``feed`` (:meth:`SampleSet.feeding`) that turns the normalised pipeline input into
the stage's input by running the stages before it, so every adapter sees stage inputs through
``transform`` as usual.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kvqe.errors import BundleError
from kvqe.sdk.preprocess import normalise
from kvqe.specs import InputSpec


@dataclass(frozen=True)
class SampleSet:
    """Images grouped by source (a VQA video's keyframes form one group; an SR crop is its own group).

    ``images``: N x H x W x 3 uint8, all one size; ``groups``: N group indices (0..G-1, ascending);
    ``sources``: G source names; ``input_spec``: the manifest input spec whose normalisation applies.
    """

    images: np.ndarray
    groups: np.ndarray
    sources: tuple[str, ...]
    input_spec: InputSpec = field(repr=False)
    feed: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def transform(self, image: np.ndarray) -> np.ndarray:
        """One stored image -> the 1x3xHxW float32 model input (the runtime's own normalisation), passed
        through ``feed`` when the set feeds an inner pipeline stage."""
        batch = normalise(image, self.input_spec)[None]
        return batch if self.feed is None else self.feed(batch)

    def feeding(self, feed: Callable[[np.ndarray], np.ndarray]) -> SampleSet:
        """The same samples as inputs of a later stage: ``feed`` maps the normalised input to the stage's."""
        return replace(self, feed=feed)

    def inputs(self) -> Iterator[np.ndarray]:
        """Model inputs one by one (batch of 1), in order."""
        for image in self.images:
            yield self.transform(image)

    def group_slices(self) -> list[slice]:
        """Index ranges of each group, in group order."""
        bounds = np.flatnonzero(np.diff(self.groups)) + 1
        starts = [0, *bounds.tolist()]
        ends = [*bounds.tolist(), len(self)]
        return [slice(a, b) for a, b in zip(starts, ends)]

    def save(self, path: Path) -> None:
        np.savez_compressed(path, images=self.images, groups=self.groups, sources=np.array(self.sources))

    @classmethod
    def load(cls, source: Path | bytes, input_spec: InputSpec, *, where: Path | str | None = None,
             advice: str = "") -> SampleSet:
        """A set :meth:`save` wrote: read from a path, or parsed from its bytes (e.g. a bundle's validation
        data as :meth:`kvqe.bundle.Bundle.read_verified_file` checked them). Not a sample set: BundleError
        naming ``where`` (default: the path) and ending with ``advice`` when given."""
        file: Path | io.BytesIO = io.BytesIO(source) if isinstance(source, bytes) else source
        name = where if where is not None else "sample set bytes" if isinstance(source, bytes) else source
        try:
            with np.load(file, allow_pickle=False) as data:
                return cls(data["images"], data["groups"], tuple(str(s) for s in data["sources"]), input_spec)
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise BundleError(f"{name}: not a kvqe sample set ({exc})" + (f"; {advice}" if advice else "")) from None
