"""The video codecs ``enhance_video`` writes and how ffmpeg is told to write them: the encoder of each codec
that this ffmpeg has, the quality (CRF) and the colour conversion and tags.

Two defaults, each with its own per-codec CRF (``Codec.crf``, keyed by chroma):

- ``chroma="420"`` (files, by default): 8-bit 4:2:0, which browsers and hardware decoders play, at the highest
  CRF that keeps the enhancement: the encode loses at most 15% (10% on average) of what the model added to a
  bicubic upscale, in squared error, beyond what 4:2:0 itself loses (docs/decisions/0007-playable-video.md).
- ``chroma="444"`` (``--master``; stdout pipes by default): a faithful intermediate, 10-bit 4:4:4 at a CRF
  whose decoded frames are at least 45 dB PSNR (in BGR) from the model's output, the tolerance the export's
  FP16 gates allow. 4:2:0 alone cannot reach that (42-45 dB before any encoding on upscaled content, by the
  decoder's chroma upsampling), and 10-bit 4:4:4 converts BGR exactly and compresses better than 8-bit 4:4:4.
"""
from __future__ import annotations

import functools
import re
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction

from kvqe.errors import BackendUnavailableError, BadInputError
from kvqe.sdk.ffmpeg_decode import MediaStream, find_ffmpeg


@dataclass(frozen=True)
class Codec:
    """A video codec ``enhance_video`` writes."""

    encoders: tuple[str, ...]  # ffmpeg encoders, preferred first; the first installed one that takes the format
    crf: dict[str, int]  # the default per chroma (see the module's docstring)
    max_crf: int
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per encoder


CODECS: dict[str, Codec] = {
    "h264": Codec(("libx264",), crf={"444": 3, "420": 16}, max_crf=51),
    "hevc": Codec(("libx265",), crf={"444": 3, "420": 18}, max_crf=51,
                  options={"libx265": ("-x265-params", "log-level=error")}),
    # -b:v 0: constant quality (CRF alone); -cpu-used 4: libvpx's usual speed for files (0 is far slower)
    "vp9": Codec(("libvpx-vp9",), crf={"444": 7, "420": 24}, max_crf=63,
                 options={"libvpx-vp9": ("-b:v", "0", "-row-mt", "1", "-cpu-used", "4")}),
    # SVT-AV1 is much faster but writes 4:2:0 only; libaom takes 4:4:4 (-cpu-used 6: its fastest file preset;
    # without look-ahead its quality holds steady frame to frame, with it a keyframe fell to 40 dB at the CRF
    # that kept the mean at 45)
    "av1": Codec(("libsvtav1", "libaom-av1"), crf={"444": 12, "420": 20}, max_crf=63,
                 options={"libsvtav1": ("-preset", "8"),
                          "libaom-av1": ("-cpu-used", "6", "-row-mt", "1", "-lag-in-frames", "0")}),
}
CHROMAS = {"444": "yuv444p10le", "420": "yuv420p"}  # the pixel format written for each chroma choice

# -colorspace name -> the scale filter's name of the same matrix; others are written as BT.709
_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc", "smpte240m": "smpte240m",
             "bt2020nc": "bt2020"}
_UNKNOWN = frozenset({"", "unknown", "reserved", "unspecified"})


@functools.cache
def installed_encoders(executable: str) -> frozenset[str]:
    """The names of the encoders ``executable`` has."""
    listing = subprocess.run([executable, "-hide_banner", "-encoders"], capture_output=True, check=False).stdout
    names = (line.split() for line in listing.decode(errors="replace").splitlines())
    return frozenset(words[1] for words in names if len(words) > 1 and len(words[0]) == 6)


@functools.cache
def _pix_fmts(executable: str, encoder: str) -> frozenset[str]:
    """The pixel formats ``encoder`` takes."""
    text = subprocess.run([executable, "-hide_banner", "-h", f"encoder={encoder}"], capture_output=True,
                          check=False).stdout.decode(errors="replace")
    match = re.search(r"Supported pixel formats:([^\n]*)", text)
    return frozenset(match.group(1).split()) if match else frozenset()


def ffmpeg_executable() -> str:
    """The ffmpeg command; BackendUnavailableError when it is not installed."""
    executable = find_ffmpeg()
    if executable is None:
        raise BackendUnavailableError("video output needs the ffmpeg command, which is not installed here; "
                                      "install it (e.g. apt-get install ffmpeg) or write images instead")
    return executable


def choose_encoder(executable: str, codec: str, pix_fmt: str, chroma: str) -> str:
    """The first installed encoder of ``codec`` that takes ``pix_fmt``; BackendUnavailableError naming them."""
    candidates = CODECS[codec].encoders
    installed = [e for e in candidates if e in installed_encoders(executable)]
    if not installed:
        raise BackendUnavailableError(
            f"this ffmpeg has no {codec} encoder ({' or '.join(candidates)}; see `ffmpeg -encoders`); install an "
            f"ffmpeg built with one, or choose another codec: {', '.join(sorted(set(CODECS) - {codec}))}")
    for encoder in installed:
        if pix_fmt in _pix_fmts(executable, encoder):
            return encoder
    raise BackendUnavailableError(
        f"{' and '.join(installed)} cannot write {codec} in {chroma[0]}:{chroma[1]}:{chroma[2]} ({pix_fmt}); "
        "use chroma 420, or install an ffmpeg whose encoders take it"
        + (" (libaom-av1 writes AV1 4:4:4)" if codec == "av1" else ""))


def check_crf(value: object, codec: str, chroma: str) -> int:
    """The CRF to write ``codec`` at: ``value``, checked, or the codec's default for ``chroma`` when None."""
    top = CODECS[codec].max_crf
    if value is None:
        return CODECS[codec].crf[chroma]
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= top):
        raise BadInputError(f"crf for {codec} must be an integer from 0 (best) to {top}, got {value!r}")
    return value


def frame_rate(value: float | Fraction) -> Fraction:
    """An exact rate from a number: 30000/1001 from 29.97002997..., 25 from 25.0 (the nearest fraction with a
    denominator up to 1001, which every broadcast rate has)."""
    return Fraction(value).limit_denominator(1001)


@dataclass(frozen=True)
class Colour:
    """How BGR frames become YUV and how the output says so: the input's matrix, range, primaries and
    transfer when it declares them; an undeclared matrix is written (and declared) as BT.709, so that every
    decoder converts the frames back the same way (untagged, ffmpeg assumes BT.601 and players BT.709)."""

    matrix: str = "bt709"  # a -colorspace name, one of _MATRICES
    range: str = "tv"  # "tv" (limited) or "pc" (full)
    primaries: str | None = None
    transfer: str | None = None

    @classmethod
    def of(cls, stream: MediaStream | None) -> Colour:
        """The colour ``stream`` declares (BT.709 limited range when it declares none)."""
        fields = stream.fields if stream is not None else {}

        def known(key: str) -> str | None:
            value = fields.get(key, "")
            return None if value in _UNKNOWN else value

        matrix = known("color_space")
        return cls(matrix if matrix in _MATRICES else "bt709", "pc" if known("color_range") == "pc" else "tv",
                   known("color_primaries"), known("color_transfer"))

    def filter(self, pix_fmt: str) -> str:
        """The filter converting bgr24 to ``pix_fmt`` with this matrix and range, rounding accurately."""
        return (f"scale=out_color_matrix={_MATRICES[self.matrix]}:out_range={self.range}:"
                f"flags=accurate_rnd+full_chroma_int,format={pix_fmt}")

    def options(self) -> list[str]:
        """The encoder options that declare it."""
        tags = ["-colorspace", self.matrix, "-color_range", self.range]
        if self.primaries:
            tags += ["-color_primaries", self.primaries]
        if self.transfer:
            tags += ["-color_trc", self.transfer]
        return tags
