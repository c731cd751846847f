"""CLI hygiene (issue #34): folders a command made for ``-o`` go when it fails, and a model call does not hold
up SIGTERM or SIGINT (tiles run on a worker while the main thread, where Python runs signal handlers, waits)."""
from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support import needs_ffmpeg, truncated_clip

import kvqe
from kvqe.cli import main
from kvqe.files import atomic_output_dir, atomic_output_file
from kvqe.interrupt import THREAD_NAME, abandoned, interruptible

HANG_GUARD_S = 60  # not a speed claim: the machine may be loaded


class _Stopped(BaseException):
    pass


def test_folders_made_for_an_output_are_removed_when_it_fails(tmp_path: Path) -> None:
    for atomic in (atomic_output_file, atomic_output_dir):
        with pytest.raises(_Stopped), atomic(tmp_path / "new" / "deeper" / "out.bin"):
            assert (tmp_path / "new" / "deeper").is_dir()
            raise _Stopped
        assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(ValueError), atomic_output_file(tmp_path / "kept" / "made" / "out.bin"):
        raise ValueError
    assert [p.name for p in tmp_path.rglob("*")] == ["kept"]
    with atomic_output_file(tmp_path / "made" / "out.bin") as tmp:
        tmp.write_bytes(b"x")
    assert (tmp_path / "made" / "out.bin").read_bytes() == b"x"


@needs_ffmpeg
def test_a_failed_enhance_removes_the_folders_it_made_for_o(tmp_path: Path) -> None:
    _, cut = truncated_clip(tmp_path)
    result = CliRunner().invoke(main, ["enhance", str(cut), "-o", str(tmp_path / "new" / "deeper" / "up.mp4")])
    assert result.exit_code == 2 and "decode stopped" in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "cut.mp4"]


def test_a_signal_ends_a_model_call_in_progress() -> None:
    started, release = threading.Event(), threading.Event()

    def stuck() -> None:  # a model call that holds its thread for a minute, as a tile on a loaded machine does
        started.set()
        release.wait(HANG_GUARD_S)

    def handler(signum: int, frame: object) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=lambda: started.wait(HANG_GUARD_S) and signal.raise_signal(signal.SIGUSR1))
    try:
        sender.start()
        began = time.monotonic()
        with pytest.raises(_Stopped):
            interruptible(stuck)
        elapsed = time.monotonic() - began
        print(f"the signal ended the call after {elapsed:.2f} s")
        assert elapsed < HANG_GUARD_S and abandoned()
    finally:
        release.set()
        signal.signal(signal.SIGUSR1, previous)
        sender.join()
    assert interruptible(lambda: 7) == 7


def test_enhance_runs_each_tile_through_the_interruptible_call(monkeypatch: pytest.MonkeyPatch) -> None:
    sr = kvqe.load("sr")
    threads = []
    run = sr.runner.run_single

    def recorded(batch: np.ndarray) -> np.ndarray:
        threads.append(threading.current_thread().name)
        return run(batch)

    monkeypatch.setattr(sr.runner, "run_single", recorded)
    out = sr.enhance(np.zeros((40, 40, 3), np.uint8), tile=16)
    assert out.shape == (160, 160, 3) and len(threads) == 9 and set(threads) == {THREAD_NAME}
