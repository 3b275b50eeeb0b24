"""Binary payloads (issue 27): frames and arrays through the worker boundary.

Every figure is measured in interleaved rounds against its baseline in the
same run, idle, beside a busy CPU and pinned to one CPU, with the caller's
CPU time beside the wall time:

- a 1080p RGB frame (6,220,800 bytes) into ``run``, which reads every byte
  (its per-channel mean) and returns three numbers: frames per second through
  process isolation over the same plugin inline (goal >= 0.8x), and over the
  same plugin through process isolation taking the frame as base64 text in
  its JSON args, today's way without binary values (goal >= 5x);
- a 6 MB result (the frame halved, a new array) back to the host: process
  over inline (goal >= 0.5x);
- a small no-op call against a blocking Pipe echo, as the wire suite
  measures it (no regression: compare with the same figure of an earlier
  commit, ``python benchmarks/run.py wire``).
"""

from __future__ import annotations

import base64
import statistics
from collections.abc import Callable

from benchmarks._harness import Figure, site_with
from benchmarks.bench_wire import CONDITIONS, condition, round_trip, timed
from plugwarden import Host
from plugwarden.testing import plugin_source

FRAMES = plugin_source(
    """
import base64
import numpy as np
if tool == "mean":
    frame = args["frame"]
    if isinstance(frame, str):  # base64 text in JSON args: decode, then view
        frame = np.frombuffer(base64.b64decode(frame), np.uint8).reshape(args["shape"])
    return [float(m) for m in frame.reshape(-1, 3).mean(axis=0)]
if tool == "halve":
    return SOURCE // 2
return None
""",
    prelude="import numpy as np\nSOURCE = np.random.default_rng(0).integers("
    "0, 255, (1080, 1920, 3), dtype=np.uint8)",
)


def _pair(
    ours: Callable[[], object], base: Callable[[], object], calls: int, rounds: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Interleaved rounds: per-call wall and caller CPU seconds of each."""
    for _ in range(3):
        ours()
        base()
    o_wall, o_cpu, b_wall, b_cpu = [], [], [], []
    for _ in range(rounds):
        wall, cpu = timed(base, calls)
        b_wall.append(wall)
        b_cpu.append(cpu)
        wall, cpu = timed(ours, calls)
        o_wall.append(wall)
        o_cpu.append(cpu)
    return o_wall, o_cpu, b_wall, b_cpu


def _rate_figure(
    name: str,
    measured: tuple[list[float], list[float], list[float], list[float]],
    target: float,
    unit: str = "frames/s",
) -> Figure:
    o_wall, o_cpu, b_wall, b_cpu = measured
    ratios = [b / o for o, b in zip(o_wall, b_wall, strict=True)]  # rates: ours over base
    return Figure(
        name,
        1 / statistics.median(o_wall),
        1 / statistics.median(b_wall),
        unit,
        f">= {target:g}x",
        lambda r: r >= target,
        f"caller CPU {statistics.median(o_cpu) * 1e3:.2f} vs "
        f"{statistics.median(b_cpu) * 1e3:.2f} ms a call (range "
        f"{min(ratios):.2f}-{max(ratios):.2f})",
        statistics.median(ratios),
    )


def measure(name: str, calls: int = 20, rounds: int = 9) -> list[Figure]:
    import numpy as np

    site = site_with({"frames": FRAMES, "inline_frames": FRAMES})
    frame = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    config = {"jobs": {"path": ":memory:"}, "plugins": {"inline_frames": {"isolation": "inline"}}}
    with condition(name), Host(config, search_path=[str(site)]) as host:
        host.start()

        def process() -> object:
            return host.call("frames", "mean", {"frame": frame}).result

        def inline() -> object:
            return host.call("inline_frames", "mean", {"frame": frame}).result

        def as_base64() -> object:
            text = base64.b64encode(frame.tobytes()).decode("ascii")
            return host.call("frames", "mean", {"frame": text, "shape": [1080, 1920, 3]}).result

        assert process() == inline() == as_base64()
        by_inline = _pair(process, inline, calls, rounds)
        by_base64 = _pair(process, as_base64, calls, rounds)

        def halve() -> object:
            return host.call("frames", "halve", {}).result

        def halve_inline() -> object:
            return host.call("inline_frames", "halve", {}).result

        assert np.array_equal(np.asarray(halve()), halve_inline())
        back = _pair(halve, halve_inline, calls, rounds)
    return [
        _rate_figure(f"1080p frame in, process vs inline, {name}", by_inline, 0.8),
        _rate_figure(f"1080p frame in, process vs base64 in JSON, {name}", by_base64, 5.0),
        _rate_figure(f"6 MB result back, process vs inline, {name}", back, 0.5, "calls/s"),
    ]


def run() -> list[Figure]:
    figures = [figure for name in CONDITIONS for figure in measure(name)]
    return figures + [figure for name in CONDITIONS for figure in round_trip(name)]
