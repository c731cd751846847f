"""Fuzzing the inputs a caller or a pipe controls: random byte streams, frame sizes, pixel formats and frame
rates through open_raw_pipe and its iteration, and random arrays through check_frame and open_source, raise
nothing but KvqeError (300 examples each, seconds in all)."""
from __future__ import annotations

import io

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvqe.errors import KvqeError
from kvqe.sdk.frames import check_frame
from kvqe.sdk.pipes import open_raw_pipe
from kvqe.sdk.sources import open_source

EXAMPLES = 300
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

sizes = st.one_of(st.integers(-3, 24), st.integers(2**15, 2**62), st.none(), st.booleans(), st.floats(),
                  st.text(max_size=3))
pix_fmts = st.one_of(st.sampled_from(["bgr24", "rgb24", "gray", "yuv420p", "BGR24", ""]), st.text(max_size=8),
                     st.none(), st.integers())
rates = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-2, 120), st.text(max_size=2))
limits = st.one_of(st.none(), st.integers(-1, 600), st.floats(-1, 5))


def _drain(source: object) -> int:
    return sum(1 for _ in source)  # type: ignore[attr-defined]


@FUZZ
@given(data=st.binary(max_size=4096), width=sizes, height=sizes, pix_fmt=pix_fmts, fps=rates, max_pixels=limits)
def test_raw_pipes_raise_only_kvqe_errors(data: bytes, width: object, height: object, pix_fmt: object, fps: object,
                                          max_pixels: object) -> None:
    try:
        frames = _drain(open_raw_pipe(io.BytesIO(data), width, height, pix_fmt=pix_fmt, fps=fps,  # type: ignore[arg-type]
                                      max_pixels=max_pixels))  # type: ignore[arg-type]
    except KvqeError:
        return
    assert isinstance(width, int) and isinstance(height, int)
    assert frames == len(data) // (width * height * 3) and len(data) % (width * height * 3) == 0


arrays = hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), st.just(np.dtype(np.uint8))),
    shape=hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=6),
)


@FUZZ
@given(image=st.one_of(arrays, st.none(), st.integers(), st.binary(max_size=8)),
       max_pixels=limits, timeout=limits)
def test_arrays_raise_only_kvqe_errors(image: object, max_pixels: object, timeout: object) -> None:
    try:
        checked = check_frame(image, "fuzz")
    except KvqeError:
        checked = None
    if checked is not None:
        assert checked.dtype == np.uint8 and checked.ndim == 3 and checked.shape[2] == 3 and checked.flags.c_contiguous
    for source in (image, [image, image]):
        try:
            _drain(open_source(source, max_pixels=max_pixels, timeout=timeout))  # type: ignore[arg-type]
        except KvqeError:
            pass
