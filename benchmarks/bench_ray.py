"""The Ray backend's cost, against raw Ray in the same run.

- A no-op call to a plugin on the ray backend against a raw Ray actor
  method call doing the same echo (``ray.get(actor.run.remote(...))``), on
  the same local cluster, interleaved, with the caller's CPU time next to
  wall time. A plugwarden call crosses one more hop: the actor hands it to
  the plugin's own worker process (that is what keeps the plugin out of
  the Ray worker and its pickled transport).
- The same for ``isolation = "ray-inline"`` (the plugin in the actor's own
  process: no extra hop; for trusted plugins).
- Throughput with N callers to one plugin with N actors (workers = N)
  against N callers to N raw actors.

Under three conditions: idle, one CPU busy, pinned to one CPU (the local
cluster is started inside the condition, so its processes are pinned too).
Run with ``tox -e bench-ray`` (``python -m benchmarks.bench_ray``): Ray
talks over the machine's interface address, so this runs in a network
namespace holding only ``lo``.
"""

from __future__ import annotations

import statistics

from benchmarks._harness import ECHO, Figure, print_table, site_with
from benchmarks.bench_wire import CONDITIONS, condition, rate, timed
from plugwarden import Host


class RawEcho:
    """The baseline actor: the same echo as the benchmark's plugin."""

    def run(self, tool: str, args: dict[str, object]) -> dict[str, object]:
        return {"tool": tool, "args": args}


def measure(name: str, n: int = 2, calls: int = 300, rounds: int = 7) -> list[Figure]:
    import ray

    site = site_with({"echo": ECHO, "inline": ECHO})
    config = {
        "defaults": {"isolation": "ray"},
        "ray": {"num_cpus": 4, "object_store_mb": 100},
        "plugins": {
            "echo": {"num_cpus": 0, "workers": n},
            "inline": {"num_cpus": 0, "isolation": "ray-inline"},
        },
        "jobs": {"path": ":memory:"},
    }
    with condition(name), Host(config, search_path=[str(site)]) as host:
        for plugin in ("echo", "inline"):
            status = host.status(plugin)
            if not status.available:
                raise SystemExit(f"{plugin} is {status.state.value}: {status.reason}")
        actors = [ray.remote(num_cpus=0)(RawEcho).remote() for _ in range(n)]
        raw = actors[0]

        def ours() -> object:
            return host.call("echo", "t", {"x": 1})

        def in_actor() -> object:
            return host.call("inline", "t", {"x": 1})

        def baseline() -> object:
            return ray.get(raw.run.remote("t", {"x": 1}), timeout=60)

        for _ in range(200):
            ours()
            in_actor()
            baseline()
        walls, cpus, ratios, inline_ratios, inline_walls = [], [], [], [], []
        for _ in range(rounds):
            b_wall, b_cpu = timed(baseline, calls)
            o_wall, o_cpu = timed(ours, calls)
            i_wall, _ = timed(in_actor, calls)
            walls.append((o_wall, b_wall))
            cpus.append((o_cpu, b_cpu))
            ratios.append(o_wall / b_wall)
            inline_ratios.append(i_wall / b_wall)
            inline_walls.append(i_wall)
        raw_calls = [
            (lambda actor=actor: ray.get(actor.run.remote("t", {"x": 1}), timeout=60))
            for actor in actors
        ]
        ours_calls = [ours] * n
        rates = []
        for _ in range(3):
            base_rate = rate(raw_calls, 2.0)[0]
            our_rate = rate(ours_calls, 2.0)[0]
            rates.append((our_rate, base_rate))
    o_wall = statistics.median(w for w, _ in walls)
    b_wall = statistics.median(b for _, b in walls)
    o_cpu = statistics.median(c for c, _ in cpus)
    b_cpu = statistics.median(b for _, b in cpus)
    rate_ratios = [o / b for o, b in rates]
    return [
        Figure(
            f"ray call vs raw Ray actor call, {name}",
            o_wall * 1e6,
            b_wall * 1e6,
            "us",
            "<= 1.2x",
            lambda r: r <= 1.2,
            f"caller CPU {o_cpu * 1e6:.0f} vs {b_cpu * 1e6:.0f} us; "
            f"range {min(ratios):.2f}-{max(ratios):.2f}",
            statistics.median(ratios),
        ),
        Figure(
            f"ray-inline call vs raw Ray actor call, {name}",
            statistics.median(inline_walls) * 1e6,
            b_wall * 1e6,
            "us",
            "<= 1.2x",
            lambda r: r <= 1.2,
            f"range {min(inline_ratios):.2f}-{max(inline_ratios):.2f}",
            statistics.median(inline_ratios),
        ),
        Figure(
            f"{n} callers to {n} actors, calls/s vs {n} raw actors, {name}",
            statistics.median(o for o, _ in rates),
            statistics.median(b for _, b in rates),
            "/s",
            ">= 0.8x",
            lambda r: r >= 0.8,
            f"range {min(rate_ratios):.2f}-{max(rate_ratios):.2f}",
            statistics.median(rate_ratios),
        ),
    ]


def run() -> list[Figure]:
    return [figure for name in CONDITIONS for figure in measure(name)]


if __name__ == "__main__":
    print_table(run(), "Ray backend")
