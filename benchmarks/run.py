"""Run the benchmarks: ``python benchmarks/run.py [SUITE ...]``.

Each figure is a ratio against a baseline measured in the same run, on the
same machine, so a noisy or slow machine shifts both sides alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import (
    bench_checks,
    bench_core,
    bench_crash,
    bench_environments,
    bench_http,
    bench_isolation,
    bench_jobs,
    bench_payloads,
    bench_results,
    bench_sandbox,
    bench_start,
    bench_wire,
)
from benchmarks._harness import print_table

SUITES = {
    "core": (bench_core.run, "Guarded calls"),
    "isolation": (bench_isolation.run, "Process isolation"),
    "checks": (bench_checks.run, "Dependency checks"),
    "http": (bench_http.run, "Health service"),
    "wire": (bench_wire.run, "Worker boundary"),
    "jobs": (bench_jobs.run, "Jobs"),
    "start": (bench_start.run, "Start"),
    "crash": (bench_crash.run, "Crash recovery"),
    "sandbox": (bench_sandbox.run, "The sandbox's cost"),
    "results": (bench_results.run, "Host memory for large results"),
    "environments": (bench_environments.run, "Plugins' own environments"),
    "payloads": (bench_payloads.run, "Binary payloads"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("suites", nargs="*", choices=[[], *SUITES], default=[])
    chosen = parser.parse_args().suites or list(SUITES)
    print(
        f"python {platform.python_version()} on {platform.platform()}, "
        f"{len(os.sched_getaffinity(0))} cores"
    )
    for name in chosen:
        run, title = SUITES[name]
        print_table(run(), title)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
