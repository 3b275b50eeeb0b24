"""Binary payloads: frames and arrays through the worker boundary.

Every figure is measured in interleaved rounds against its baseline in the
same run, idle, beside a busy CPU and pinned to one CPU, with the caller's
CPU time beside the wall time:

- a 1080p RGB frame (6,220,800 bytes) into ``run``, which reads every byte
  once (its mean) and returns a number: frames per second through process
  isolation over the same plugin inline (goal >= 0.8x; inline copies a
  mutable argument for the plugin, as the worker gets its own), over its
  ``run()`` called directly in the caller's process (no copy, no guard: the
  floor, for information), and over the same plugin through process
  isolation taking the frame as base64 text in its JSON args, the way
  without binary values (goal >= 5x);
- a 6 MB result back to the host: a new frame, the given one blurred (a
  3-row box filter, what an image filter returns): process over inline (goal
  >= 0.5x); and the frame halved (one vectorised operation, ~0.5 ms: where
  the boundary's own cost shows most, for information);
- a small no-op call against a blocking Pipe echo, as the wire suite
  measures it (no regression: compare with the same figure of an earlier
  commit, ``python benchmarks/run.py wire``).
"""

from __future__ import annotations

import base64
import statistics
import sys
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
    return float(frame.mean())
if tool == "blur":
    rows = SOURCE.astype(np.uint16)
    return ((rows[:-2] + rows[1:-1] + rows[2:]) // 3).astype(np.uint8)
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
    target: float | None,
    unit: str = "frames/s",
) -> Figure:
    """Calls per second, ours over the baseline's (``target`` None: for information)."""
    o_wall, o_cpu, b_wall, b_cpu = measured
    ratios = [b / o for o, b in zip(o_wall, b_wall, strict=True)]  # rates: ours over base
    extra = statistics.median(o_wall) - statistics.median(b_wall)
    return Figure(
        name,
        1 / statistics.median(o_wall),
        1 / statistics.median(b_wall),
        unit,
        "(info)" if target is None else f">= {target:g}x",
        (lambda r: True) if target is None else (lambda r: r >= target),
        f"{extra * 1e3:+.2f} ms a call; caller CPU {statistics.median(o_cpu) * 1e3:.2f} vs "
        f"{statistics.median(b_cpu) * 1e3:.2f} ms (range {min(ratios):.2f}-{max(ratios):.2f})",
        statistics.median(ratios),
    )


def measure(name: str, calls: int = 20, rounds: int = 9) -> list[Figure]:
    import importlib

    import numpy as np

    site = site_with({"frames": FRAMES, "inline_frames": FRAMES})
    sys.path.insert(0, str(site))
    plugin = importlib.import_module("bench_inline_frames")  # its run(), called directly
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

        def direct() -> object:
            return plugin.run(tool="mean", args={"frame": frame})

        assert process() == inline() == as_base64() == direct()
        by_inline = _pair(process, inline, calls, rounds)
        by_direct = _pair(process, direct, calls, rounds)
        by_base64 = _pair(process, as_base64, calls, rounds)
        back = {}
        for tool in ("blur", "halve"):
            ours = lambda tool=tool: host.call("frames", tool, {}).result  # noqa: E731
            base = lambda tool=tool: host.call("inline_frames", tool, {}).result  # noqa: E731
            assert np.array_equal(np.asarray(ours()), base())
            back[tool] = _pair(ours, base, calls, rounds)
    sys.path.remove(str(site))
    return [
        _rate_figure(f"1080p frame in, process vs inline, {name}", by_inline, 0.8),
        _rate_figure(f"1080p frame in, process vs run() called directly, {name}", by_direct, None),
        _rate_figure(f"1080p frame in, process vs base64 in JSON, {name}", by_base64, 5.0),
        _rate_figure(
            f"6 MB result (blur) back, process vs inline, {name}", back["blur"], 0.5, "calls/s"
        ),
        _rate_figure(
            f"6 MB result (halve) back, process vs inline, {name}", back["halve"], None, "calls/s"
        ),
    ]


def run() -> list[Figure]:
    figures = [figure for name in CONDITIONS for figure in measure(name)]
    return figures + [figure for name in CONDITIONS for figure in round_trip(name)]
