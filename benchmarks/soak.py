"""Soak: ``plugwarden serve`` operated for minutes under load, with plugins
that raise, crash, time out and leak, and with manual restarts on top.

    python benchmarks/soak.py [--minutes 5] [--callers 4] [--storm 2]

Bounded (``--minutes``), loopback only, not part of CI. It samples the server
process at start (after a warm-up) and end: resident memory, threads, open
fds, child processes and zombies; it counts every HTTP status and any 5xx or
connection error. ``--storm N`` adds N threads restarting the benign plugins
back to back while the callers call them (the restart storm). The goal: flat
resources, zero 5xx, no protocol violation on a benign plugin, every
restart done within RESTART_BUDGET_S. Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import free_port
from plugwarden.testing import ECHO_PLUGIN, plugin_source, write_plugin

TOKEN = "soak-token"
PLUGINS = {
    # name: (source, guards)
    "echo": (ECHO_PLUGIN, {}),  # workers = 2 granted in CONFIG
    "raiser": (
        plugin_source("if args['n'] % 2:\n    raise ValueError('odd input')\nreturn args['n']"),
        {},
    ),
    "crasher": (
        plugin_source("import ctypes\nif args['n'] % 20 == 0:\n    ctypes.string_at(0)\nreturn 1"),
        {"workers": 2},
    ),
    "sleeper": (
        plugin_source("import time\nif args['n'] % 10 == 0:\n    time.sleep(30)\nreturn 1"),
        {"workers": 2, "timeout_s": 0.5},
    ),
    "leaker": (
        plugin_source(
            "HOARD.append(bytearray(20 * 2**20))\nreturn len(HOARD)", prelude="HOARD = []"
        ),
        {"memory_mb": 200},
    ),
    "sick": (
        ECHO_PLUGIN + "\n@hookimpl\ndef health():\n    raise RuntimeError('always sick')\n",
        {},
    ),
    "calm": (ECHO_PLUGIN, {"workers": 2}),
}
BENIGN = ("echo", "calm")  # never a protocol violation, whatever the restarts
RESTART_BUDGET_S = 30.0  # a restart of a benign plugin under load, at most
CONFIG = f"""
[defaults]
restart_backoff_s = 0.2
restart_backoff_max_s = 2
max_restarts = 100000
restart_window_s = 60
health_interval_s = 2
health_timeout_s = 1

[plugins.echo]
workers = 2

[server]
token = "{TOKEN}"
drain_timeout_s = 10
"""


def sample(pid: int) -> dict[str, float]:
    process = psutil.Process(pid)
    children = process.children(recursive=True)
    zombies = 0
    for child in children:
        try:
            zombies += child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            continue
    return {
        "rss_mb": process.memory_info().rss / 2**20,
        "threads": process.num_threads(),
        "fds": process.num_fds(),
        "children": len(children),
        "zombies": zombies,
    }


class Load:
    def __init__(self, url: str, seconds: float, callers: int) -> None:
        self.url = url
        self.until = time.monotonic() + seconds
        self.callers = callers
        self.statuses: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.violations: collections.Counter[str] = collections.Counter()
        self.slowest_restart_s = 0.0
        self.lock = threading.Lock()

    def count(self, key: str, bucket: collections.Counter[str]) -> None:
        with self.lock:
            bucket[key] += 1

    def caller(self, seed: int) -> None:
        rng = random.Random(seed)
        names = list(PLUGINS)
        with httpx.Client(base_url=self.url, timeout=60) as client:
            n = 0
            while time.monotonic() < self.until:
                n += 1
                name = rng.choice(names)
                try:
                    answer = client.post(
                        f"/v1/plugins/{name}/run",
                        json={"tool": "t", "args": {"n": rng.randrange(1000)}},
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    )
                    record = answer.json() if answer.status_code == 200 else {}
                    self.count(f"run {answer.status_code} ok={record.get('ok')}", self.statuses)
                    if name in BENIGN and record.get("error_type") == "ProtocolViolation":
                        self.count(f"{name}: {record.get('error')}"[:160], self.violations)
                    if n % 25 == 0:
                        for path in ("/v1/plugins", "/metrics", "/readyz", "/"):
                            self.count(f"GET {client.get(path).status_code}", self.statuses)
                except httpx.HTTPError as exc:
                    self.count(type(exc).__name__, self.errors)

    def restarter(self) -> None:
        rng = random.Random(7)
        with httpx.Client(base_url=self.url, timeout=120) as client:
            while time.monotonic() < self.until:
                name = rng.choice(list(PLUGINS))
                try:
                    answer = client.post(
                        f"/v1/plugins/{name}/restart",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    )
                    self.count(f"restart {answer.status_code}", self.statuses)
                except httpx.HTTPError as exc:
                    self.count(type(exc).__name__, self.errors)
                deadline = time.monotonic() + 5
                while time.monotonic() < min(deadline, self.until):
                    time.sleep(0.1)  # a paced operator, not a synchronisation

    def stormer(self, seed: int) -> None:
        """Restarts of the benign plugins, back to back, while they are called."""
        rng = random.Random(seed)
        with httpx.Client(base_url=self.url, timeout=300) as client:
            while time.monotonic() < self.until:
                name = rng.choice(BENIGN)
                began = time.monotonic()
                try:
                    answer = client.post(
                        f"/v1/plugins/{name}/restart",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                    )
                    state = answer.json().get("state") if answer.status_code == 200 else None
                    self.count(f"storm restart {answer.status_code} {state}", self.statuses)
                except httpx.HTTPError as exc:
                    self.count(type(exc).__name__, self.errors)
                with self.lock:
                    self.slowest_restart_s = max(self.slowest_restart_s, time.monotonic() - began)

    def run(self, storm: int = 0) -> None:
        threads = [threading.Thread(target=self.caller, args=(i,)) for i in range(self.callers)]
        threads += [threading.Thread(target=self.stormer, args=(100 + i,)) for i in range(storm)]
        threads.append(threading.Thread(target=self.restarter))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


def settle(url: str, pid: int, timeout_s: float = 60) -> list[dict[str, Any]]:
    """Wait (bounded) until no restart or replacement is pending: every
    plugin up and every pool full (a keeper and a worker per worker, and the
    zygote), so that start and end are sampled in the same shape."""
    deadline = time.monotonic() + timeout_s
    plugins: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        plugins = httpx.get(url + "/v1/plugins", timeout=30).json()
        up = all(p["state"] in ("INITIALIZED", "RUNNING") for p in plugins)
        expected = 1 + 2 * sum(int(p["workers"]) for p in plugins)
        if up and len(psutil.Process(pid).children(recursive=True)) == expected:
            break
        time.sleep(0.2)
    return plugins


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--storm", type=int, default=0, help="restart storm threads")
    options = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="plugwarden-soak-"))
    site = home / "site"
    site.mkdir()
    for name, (source, guards) in PLUGINS.items():
        write_plugin(site, name, source, module=f"soak_{name}", manifest={"guards": guards})
    (home / "plugwarden.toml").write_text(CONFIG)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(site)}
    log = (home / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "plugwarden", "serve", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                print("server did not become ready; see", home / "serve.log")
                return 1
            time.sleep(0.2)
        warmup = Load(url, 10, options.callers)
        warmup.run()
        settle(url, server.pid)
        start = sample(server.pid)
        load = Load(url, options.minutes * 60, options.callers)
        load.run(options.storm)
        plugins = settle(url, server.pid)
        end = sample(server.pid)
        server.send_signal(signal.SIGTERM)
        status = server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        log.close()
    return report(start, end, load, plugins, status, home)


def report(start, end, load, plugins, status, home) -> int:  # type: ignore[no-untyped-def]
    print(f"soak: {sum(load.statuses.values())} requests; server log {home / 'serve.log'}")
    print(f"{'':10} {'start':>10} {'end':>10} {'delta':>10}  allowance")
    # Threads: the restart pool grows to its bound (4) as restarts overlap.
    allowance = {"rss_mb": 50.0, "threads": 4, "fds": 4, "children": 0, "zombies": 0}
    grew = []
    for key, allowed in allowance.items():
        delta = end[key] - start[key]
        print(f"{key:10} {start[key]:10.1f} {end[key]:10.1f} {delta:+10.1f}  <= {allowed}")
        if delta > allowed or (key == "zombies" and end[key]):
            grew.append(key)
    for key, count in sorted(load.statuses.items()):
        print(f"  {key:28} {count}")
    for key, count in sorted(load.errors.items()):
        print(f"  transport error {key:12} {count}")
    for plugin in plugins:
        print(
            f"  {plugin['name']:8} {plugin['state']:12} ok={plugin['success_count']} "
            f"err={plugin['error_count']} restarts={plugin['restarts_by_cause']} "
            f"trips={plugin['guard_trips']} healthy={plugin['healthy']}"
        )
    for key, count in sorted(load.violations.items()):
        print(f"  protocol violation on {key} x{count}")
    fivexx = sum(n for key, n in load.statuses.items() if " 5" in key)
    violations = sum(load.violations.values())
    slow = load.slowest_restart_s > RESTART_BUDGET_S
    print(f"5xx: {fivexx}; transport errors: {sum(load.errors.values())}")
    print(f"protocol violations on benign plugins: {violations}")
    print(f"slowest storm restart: {load.slowest_restart_s:.1f}s (budget {RESTART_BUDGET_S:g}s)")
    print(f"exit status after SIGTERM: {status}; grew: {grew or 'nothing'}")
    failed = fivexx or load.errors or grew or status != 0 or violations or slow
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
