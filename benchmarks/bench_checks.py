"""What the GPU pre-flight costs start().

With no plugin needing a GPU, start() with the GPU check in the pre-flight vs
start() without it (target: nothing measurable). With one plugin needing a
GPU, the time it adds (one probe subprocess per start), and the full probe
(torch imported, as doctor runs it), each as a ratio to `python -c 'import torch'`.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from benchmarks._harness import ECHO, Figure, site_with
from plugwarden import Host
from plugwarden.host import pipeline
from plugwarden.preflight.gpu import check_gpu, run_probe
from plugwarden.testing import write_plugin


def _start(site: str) -> float:
    started = time.perf_counter()
    with Host({"defaults": {"isolation": "inline"}}, search_path=[site]):
        return time.perf_counter() - started


def _median(function: Callable[[], float], rounds: int = 5) -> float:
    return statistics.median(function() for _ in range(rounds))


def _interleaved(
    first: Callable[[], float], second: Callable[[], float], rounds: int = 7
) -> tuple[float, float, float]:
    a, b, ratios = [], [], []
    for _ in range(rounds):
        x, y = first(), second()
        a.append(x)
        b.append(y)
        ratios.append(x / y)
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def run() -> list[Figure]:
    plugins = {f"c{index:02d}": ECHO for index in range(20)}
    plain = str(site_with(plugins))
    gpu_site = site_with({"gpu": ECHO}, manifest={"requires_gpu": True})
    for name, source in plugins.items():  # the same 20, plus the one that needs a GPU
        write_plugin(gpu_site, name, source, module=f"bench_{name}")

    def without_check() -> float:
        saved = list(pipeline.PREFLIGHT)
        pipeline.PREFLIGHT[:] = [c for c in saved if c is not check_gpu]
        try:
            return _start(plain)
        finally:
            pipeline.PREFLIGHT[:] = saved

    checked, unchecked, ratio = _interleaved(lambda: _start(plain), without_check)
    figures = [
        Figure(
            "start(), 20 plugins, none needs a GPU: with vs without the GPU check",
            checked,
            unchecked,
            "s",
            "~1.0 (nothing measurable)",
            lambda r: r <= 1.05,
            "inline plugins, so start() is the checks",
            ratio,
        ),
    ]
    if importlib.util.find_spec("torch") is None:
        print("bench checks: torch not installed; the ratios to `import torch` are skipped")
        return figures

    def import_torch() -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        return time.perf_counter() - started

    def probe_with_torch() -> float:
        started = time.perf_counter()
        run_probe(with_torch=True)
        return time.perf_counter() - started

    baseline = _median(import_torch)
    gpu_start = _median(lambda: _start(str(gpu_site)))
    added = max(0.0, gpu_start - _median(lambda: _start(plain)))
    probe = _median(probe_with_torch)
    hardware = run_probe().hardware
    figures += [
        Figure(
            "GPU pre-flight added to start() (1 of 21 plugins needs a GPU)",
            added,
            baseline,
            "s",
            "report, vs `python -c 'import torch'`",
            lambda r: True,
            "torch imported by the probe"
            if hardware
            else "no NVIDIA hardware here: the probe skips torch",
        ),
        Figure(
            "full probe with torch (doctor) vs `python -c 'import torch'`",
            probe,
            baseline,
            "s",
            "report (~1x: the probe is torch's import)",
            lambda r: True,
        ),
    ]
    return figures
