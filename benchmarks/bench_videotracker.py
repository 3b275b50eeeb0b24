"""Issue 13: frames per second of the VideoTracker's ``track`` on the
synthetic two-face video, against the raw detector + tracker loop (no
plugwarden: the same decoding, MTCNN and ByteTrack, in a child process
started under the same condition as the plugin's worker), in the
same run, interleaved rounds, idle / one CPU busy / pinned to one CPU.
Goal: host overhead <= 3%. CPU when no GPU, CUDA too where there is one.

Run it where the plugin's stack is installed: ``tox -e bench-videotracker``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import psutil

from benchmarks._harness import Figure, print_table
from benchmarks.bench_wire import CONDITIONS, condition
from plugwarden import Host

FRAMES = 45


def _raw_loop(connection: Connection, video: str, device: str) -> None:
    """In a child process started under the same condition as the host's
    worker: the loop without plugwarden, once per request; seconds per frame."""
    from plugwarden_videotracker.frames import open_source
    from plugwarden_videotracker.pipeline import Detector, track

    detector = Detector("mtcnn", device)
    while connection.recv():
        started = time.perf_counter()
        result = track(
            open_source(video), detector, "bytetrack", 0.9, lambda d, t: None, lambda: False
        )
        assert result["summary"]["frames"] == FRAMES
        connection.send((time.perf_counter() - started) / FRAMES)


def fps(name: str, device: str, video: str, rounds: int = 5) -> Figure:
    # What its manifest asks for, granted as an operator does (the defaults are a ceiling).
    grants = {"memory_mb": 6144, "timeout_s": 600, "load_timeout_s": 300}
    settings = {"requires_gpu": device != "cpu", "device": device, **grants}
    config = {"jobs": {"path": ":memory:"}, "plugins": {"videotracker": settings}}
    with condition(name), Host(config, only={"videotracker"}) as host:
        status = host.status("videotracker")
        assert status.available, status.reason

        def ours() -> float:
            started = time.perf_counter()
            result = host.call("videotracker", "track", {"video": video})
            assert result.ok, result.error
            return (time.perf_counter() - started) / FRAMES

        parent, child = multiprocessing.get_context("spawn").Pipe()
        raw = multiprocessing.get_context("spawn").Process(
            target=_raw_loop, args=(child, video, device)
        )
        raw.start()

        def baseline() -> float:
            parent.send(True)
            return float(parent.recv())

        ours()
        baseline()
        mine, base, ratios = [], [], []
        for _ in range(rounds):
            b = baseline()
            o = ours()
            mine.append(o)
            base.append(b)
            ratios.append(o / b)
        parent.send(False)
        raw.join()
    return Figure(
        f"track fps on {device}, {name} (plugwarden vs raw loop)",
        1 / statistics.median(mine),
        1 / statistics.median(base),
        "frames/s",
        "overhead <= 3%",
        lambda ratio: ratio <= 1.03,
        f"time per frame ratio, range {min(ratios):.3f}-{max(ratios):.3f}",
        statistics.median(ratios),
    )


def main() -> int:
    from plugwarden_videotracker.synthetic import make_video

    video = str(Path(tempfile.mkdtemp()) / "two-faces.mp4")
    make_video(video, FRAMES)
    devices = ["cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            devices.append("cuda")
    except ImportError:
        pass
    figures = [fps(name, device, video) for device in devices for name in CONDITIONS]
    print(f"python {sys.version.split()[0]}, {psutil.cpu_count()} cores")
    print_table(figures, "VideoTracker (issue 13)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
