"""The processing ladder, modelled on KVQ's (enhancement, pre-processing, transcoding with QP 16-47 in
six groups, applied serially), run with real encoders through ffmpeg. Each version is data: an ffmpeg
filter chain (or none) followed by one encode, optionally after an earlier "upload" encode (a phone's
encode at reduced size that the platform then transcodes again). ``orig`` is the pristine clip itself.
Outputs keep the source's size and frame count so the full-reference teacher sees aligned frames.

AV1 is left out, measured: the student's inputs can be made from it (OpenCV 5 decodes AV1, and with the 4.x
wheels, which do not, kvqe reads such streams through the ffmpeg command), yet adding AV1 versions to
training lowered the student's agreement with the teacher (docs/distillation.md)."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kvqe.errors import KvqeError

if TYPE_CHECKING:  # content makes its uploads with this module's x264 settings
    from kvqe.training.content import Source


@dataclass(frozen=True)
class Version:
    """``filters``: an ffmpeg -vf chain applied before encoding ('' for none); ``codec``: encoder args
    (empty: the pristine clip itself); ``upload``/``upload_filters``: an earlier encode and its chain."""

    name: str
    filters: str
    codec: tuple[str, ...]
    suffix: str = ".mp4"
    upload: tuple[str, ...] = ()
    upload_filters: str = ""


def x264(crf: int) -> tuple[str, ...]:
    return ("-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p")


def x265(crf: int) -> tuple[str, ...]:
    return ("-c:v", "libx265", "-preset", "ultrafast", "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-x265-params", "log-level=error")


def vp9(crf: int) -> tuple[str, ...]:
    return ("-c:v", "libvpx-vp9", "-crf", str(crf), "-b:v", "0", "-deadline", "realtime", "-cpu-used", "8",
            "-pix_fmt", "yuv420p")


# QP/CRF groups spanning KVQ's 16-47 (six groups) plus a severe tail; pre-processing and enhancement
# steps are combined with a transcode, as platforms apply them serially.
LADDER = [
    Version("x264_crf16", "", x264(16)),
    Version("x264_crf22", "", x264(22)),
    Version("x264_crf28", "", x264(28)),
    Version("x264_crf34", "", x264(34)),
    Version("x264_crf40", "", x264(40)),
    Version("x264_crf47", "", x264(47)),
    Version("x265_crf30", "", x265(30)),
    Version("x265_crf42", "", x265(42)),
    Version("vp9_crf45", "", vp9(45), ".webm"),
    Version("vp9_crf60", "", vp9(60), ".webm"),
    Version("downup2_x264_crf22", "scale=iw/2:ih/2:flags=area,scale=iw*2:ih*2:flags=bicubic", x264(22)),
    Version("downup3_x264_crf30", "scale=iw/3:ih/3:flags=area,scale=iw*3:ih*3:flags=bicubic", x264(30)),
    Version("blur_x264_crf22", "gblur=sigma=1.6", x264(22)),
    Version("noise_x264_crf22", "noise=alls=14:allf=t", x264(22)),
    Version("denoise_sharpen_x264_crf34", "hqdn3d=6:4:8:6,unsharp=5:5:1.2", x264(34)),
    Version("contrast_x264_crf28", "eq=contrast=1.25:brightness=0.06:saturation=1.2", x264(28)),
    Version("orig", "", ()),
    Version("upload_half_x264_crf30_x264_crf24", "", x264(24), upload=x264(30),
            upload_filters="scale=trunc(iw/4)*2:trunc(ih/4)*2:flags=bicubic"),
]
TINY_LADDER = [LADDER[0], LADDER[3], LADDER[5], LADDER[12]]


def _encode(source: Path, chain: str, codec: tuple[str, ...], out: Path) -> None:
    tmp = out.with_name(f".tmp.{out.name}")
    vf = ["-vf", chain] if chain else []
    result = subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(source), *vf, *codec, "-an", str(tmp)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise KvqeError(f"ffmpeg failed on {out.name}: {result.stderr.strip()[:500]}")
    tmp.replace(out)


def render(source: Source, version: Version, folder: Path) -> Path:
    """Write ``source`` processed by ``version`` (kept if it exists); the size is forced back to the
    source's, so down-up scaling of odd sizes stays aligned."""
    out = folder / f"{source.name}__{version.name}{version.suffix}"
    if out.is_file():
        return out
    if not version.codec:
        tmp = out.with_name(f".tmp.{out.name}")
        shutil.copyfile(source.path, tmp)
        tmp.replace(out)
        return out
    chain = ",".join(f for f in (version.filters, f"scale={source.width}:{source.height}:flags=bicubic") if f)
    if not version.upload:
        _encode(source.path, chain, version.codec, out)
        return out
    upload = out.with_name(f".upload.{out.stem}.mp4")
    try:
        _encode(source.path, version.upload_filters, version.upload, upload)
        _encode(upload, chain, version.codec, out)
    finally:
        upload.unlink(missing_ok=True)
    return out
