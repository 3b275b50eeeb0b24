"""Plugins' own environments: what an environment costs to make, to install
into a running host, on disk, and what ``preload`` saves a crashed worker.

- A small plugin's environment, uv's cache warm: ``EnvironmentStore.build``
  (a uv venv, the plugin's wheel and its one dependency, the host's worker
  side) against ``python -m venv`` + ``pip install`` of the same wheel into
  it (pip's cache warm too): the same environment made the usual way.
  Rounds interleaved, idle / one CPU busy / pinned; wall and CPU time
  (children's included: the work is uv's and pip's).
- ``install`` to INITIALIZED in a running host against a restart of the
  same plugin already installed (the pipeline alone: what any install into
  a running host must at least cost).
- Disk: a second environment holding the same torch as the first, against
  the first (uv links both from its cache: ``du`` counts a file linked
  twice once).
- The videotracker's crash -> next successful call with ``preload`` (its
  zygote imported torch, torchvision, cv2... before forking) against
  without; needs its stack (``tox -e videotracker``), else left out.
"""

from __future__ import annotations

import importlib.util
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks._harness import ECHO, Figure
from benchmarks.bench_wire import CONDITIONS, condition
from plugwarden import Host
from plugwarden.environments import EnvironmentStore, InstallPlan
from plugwarden.testing import write_wheel

ROUNDS = 3
TORCH = "torch==2.13.0"  # the CPU build on this machine's disk (any torch would do)


def _quiet(phase: str, message: str) -> None:
    """Progress is not measured."""


def _timed(work: object) -> tuple[float, float]:
    """Wall and CPU seconds (this process and its children) of ``work()``."""
    wall, cpu = time.perf_counter(), _cpu()
    work()  # type: ignore[operator]
    return time.perf_counter() - wall, _cpu() - cpu


def _cpu() -> float:
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _pip_environment(folder: Path, wheel: Path) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    subprocess.run(
        [str(folder / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def creation(name: str, work: Path) -> Figure:
    wheel = write_wheel(work / "wheels", "smallplugin", ECHO, requires=("six==1.17.0",))
    store = EnvironmentStore(work / f"plugins-{name}")
    store.build(InstallPlan.of((str(wheel),), False), _quiet)  # the caches warm, both sides
    _pip_environment(work / "warm-pip", wheel)
    ours, base, cpus = [], [], []
    with condition(name):
        for index in range(ROUNDS):
            folder = work / f"pip-{name}-{index}"
            b = _timed(lambda folder=folder: _pip_environment(folder, wheel))
            o = _timed(lambda: store.build(InstallPlan.of((str(wheel),), False), _quiet))
            base.append(b)
            ours.append(o)
            cpus.append((o[1], b[1]))
            shutil.rmtree(folder)
    mine = statistics.median(w for w, _ in ours)
    theirs = statistics.median(w for w, _ in base)
    cpu = statistics.median(c for c, _ in cpus), statistics.median(c for _, c in cpus)
    return Figure(
        f"small plugin's environment, warm cache ({name})", mine, theirs, "s",
        "<= 3 s", lambda _ratio, mine=mine: mine <= 3.0,
        f"baseline: venv + pip install; CPU {cpu[0]:.2f} s vs {cpu[1]:.2f} s",
    )  # fmt: skip


def _finished(host: Host, job_id: str) -> None:
    deadline = time.monotonic() + 300
    while host.job(job_id).state in ("queued", "running"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not end")
        time.sleep(0.01)


def live_install(name: str, work: Path) -> Figure:
    plugins = work / f"live-{name}"
    config = {"jobs": {"path": ":memory:"}, "server": {"plugins_dir": str(plugins)}}
    host = Host(config, search_path=[])
    host.start()
    ours, base = [], []
    try:
        with condition(name):
            for index in range(ROUNDS):
                wheel = write_wheel(work / f"live-{index}", f"fresh{index}", ECHO, requires=["six"])
                o = _timed(lambda wheel=wheel: _finished(host, host.install([str(wheel)]).id))
                if not host.status(f"fresh{index}").available:
                    raise RuntimeError(host.status(f"fresh{index}").reason)
                b = _timed(lambda index=index: host.restart(f"fresh{index}"))
                ours.append(o)
                base.append(b)
    finally:
        host.close()
    mine = statistics.median(w for w, _ in ours)
    theirs = statistics.median(w for w, _ in base)
    cpu = statistics.median(c for _, c in ours), statistics.median(c for _, c in base)
    return Figure(
        f"install to INITIALIZED, running host ({name})", mine, theirs, "s", "<= 5 s",
        lambda _ratio, mine=mine: mine <= 5.0,
        f"baseline: a restart of it (the pipeline alone); CPU {cpu[0]:.2f} s vs {cpu[1]:.2f} s",
    )  # fmt: skip


def _disk(*folders: Path) -> int:
    """Bytes ``du`` gives the folders together (a file linked twice counts once)."""
    done = subprocess.run(
        ["du", "-s", "--block-size=1", *map(str, folders)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return sum(int(line.split()[0]) for line in done.stdout.splitlines())


def disk(work: Path) -> Figure:
    # Beside uv's cache (the same file system), as plugins_dir is by default.
    root = Path(tempfile.mkdtemp(prefix="pw-bench-envs-", dir=Path.home() / ".cache"))
    try:
        store = EnvironmentStore(root)
        first = store.build(InstallPlan.of((TORCH,), False), _quiet)
        second = store.build(InstallPlan.of((TORCH,), False), _quiet)
        one = _disk(Path(first.root))
        both = _disk(Path(first.root), Path(second.root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    added = both - one
    return Figure(
        f"disk of a second environment with {TORCH}", added / 2**20, one / 2**20, "MiB",
        "<= 0.05x", lambda ratio: ratio <= 0.05, "baseline: the first environment",
    )  # fmt: skip


def _crash_to_next_call(host: Host, image: str) -> float:
    (pid,) = host.worker_pids("videotracker")
    start = time.perf_counter()
    subprocess.run(["kill", "-9", str(pid)], check=True)
    while not host.call("videotracker", "detect", {"image": image}).ok:
        pass
    return time.perf_counter() - start


def preload(work: Path) -> list[Figure]:
    if importlib.util.find_spec("plugwarden_videotracker") is None or (
        importlib.util.find_spec("torch") is None
    ):
        return []  # its stack is not here: tox -e videotracker
    import cv2
    from plugwarden_videotracker.synthetic import make_video

    make_video(work / "v.mp4", 2)
    capture = cv2.VideoCapture(str(work / "v.mp4"))
    _, frame = capture.read()
    capture.release()
    image = str(work / "frame.png")
    cv2.imwrite(image, frame)
    settings = {"requires_gpu": False, "device": "cpu", "memory_mb": 6144, "timeout_s": 600,
                "load_timeout_s": 300, "restart_window_s": 1.0,
                "permissions": {"read": [str(work)]}}  # fmt: skip
    hosts = {}
    for warm in (True, False):
        config = {"jobs": {"path": ":memory:"},
                  "plugins": {"videotracker": {**settings, "preload": warm}}}  # fmt: skip
        hosts[warm] = Host(config, only={"videotracker"})
        hosts[warm].start()
    figures = []
    try:
        for host in hosts.values():
            if not host.call("videotracker", "detect", {"image": image}).ok:
                raise RuntimeError(host.status("videotracker").reason)
        for name in CONDITIONS:
            ours, base = [], []
            with condition(name):
                for _ in range(ROUNDS):
                    time.sleep(1.2)  # each crash the first in its restart window
                    base.append(_crash_to_next_call(hosts[False], image))
                    ours.append(_crash_to_next_call(hosts[True], image))
            figures.append(
                Figure(
                    f"videotracker: crash -> next good call, preload ({name})",
                    statistics.median(ours),
                    statistics.median(base),
                    "s",
                    "<= 0.3x",
                    lambda ratio: ratio <= 0.3,
                    "baseline: without preload (each new worker imports torch...); the "
                    "work is the workers': no host CPU figure",
                )
            )
    finally:
        for host in hosts.values():
            host.close()
    return figures


def run() -> list[Figure]:
    work = Path(tempfile.mkdtemp(prefix="pw-bench-env-"))
    threading.excepthook = threading.__excepthook__
    try:
        figures = [creation(name, work) for name in CONDITIONS]
        figures += [live_install(name, work) for name in CONDITIONS]
        figures.append(disk(work))
        return [*figures, *preload(work)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
