"""What a source string or path names: a local file (read as that file, whatever characters its name holds,
and refused when it is a playlist not allowed) or a URL of an allowed scheme, and how each decoder is told to
open it."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from kvqe.errors import BadInputError
from kvqe.sdk.demuxers import check_local_file
from kvqe.sdk.ffmpeg_decode import local_input
from kvqe.sdk.limits import NETWORK_SCHEMES, Limits, url_scheme

# ffmpeg's -timeout is the socket I/O timeout of these (for rtmp it would make ffmpeg listen instead)
_FFMPEG_TIMEOUT_SCHEMES = frozenset({"http", "https", "rtsp", "rtsps"})


def check_file(path: Path) -> None:
    """BadInputError unless ``path`` is a file that is not empty."""
    if not path.exists():
        raise BadInputError(f"no such file: {path}")
    if path.is_dir():
        raise BadInputError(f"{path} is a directory; give a video or image file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{path} is empty (0 bytes); give a video or image file")


@dataclass(frozen=True)
class Target:
    """A video to open: ``name`` as the user gave it; a local file (read as that file by both decoders,
    whatever its name holds) or a URL with its scheme, in lower case in ``url`` (FFmpeg's protocol names
    are case-sensitive, URL schemes are not)."""

    name: str
    path: Path | None = None
    scheme: str = ""
    url: str = ""

    @property
    def for_opencv(self) -> str:
        """The name OpenCV opens: an absolute path (FFmpeg takes a leading "name:" as a protocol, never a
        leading "/"), or the URL."""
        return str(self.path.absolute()) if self.path is not None else self.url

    def for_ffmpeg(self, limits: Limits) -> list[str]:
        """ffmpeg's input options (the demuxers allowed, timeouts) and ``-i`` argument."""
        formats = ["-format_whitelist", limits.format_whitelist]
        if self.path is not None:
            return [*formats, *local_input(self.path)]
        if limits.timeout is None:
            return [*formats, "-i", self.url]
        microseconds = str(round(limits.timeout * 1e6))
        socket = ["-timeout", microseconds] if self.scheme in _FFMPEG_TIMEOUT_SCHEMES else []
        return [*formats, "-rw_timeout", microseconds, *socket, "-i", self.url]


def resolve_target(source: str | os.PathLike[str], limits: Limits) -> Target:
    """A local file when ``source`` names one (or is a path object) and is not a playlist or manifest of a
    demuxer ``limits`` does not allow, else a URL of an allowed scheme."""
    scheme = url_scheme(source) if isinstance(source, str) else None
    if scheme is None or os.path.lexists(source):
        path = Path(source)
        check_file(path)
        check_local_file(path, str(path), limits.demuxers)
        return Target(str(path), path)
    assert isinstance(source, str)
    allowed = NETWORK_SCHEMES | limits.protocols
    if scheme not in allowed:
        raise BadInputError(
            f"{source}: not a local file, and kvqe reads '{scheme}:' URLs only when asked (FFmpeg's {scheme} "
            "protocol can reach local files or other sources the caller did not mean to give); by default kvqe "
            f"reads {', '.join(sorted(NETWORK_SCHEMES))} URLs; to read this one, allow its scheme "
            f"explicitly: protocols=['{scheme}']"
        )
    return Target(source, scheme=scheme, url=scheme + source[len(scheme):])
