"""A hostile plugin's attacks on the host, run by ``tests/test_sandbox.py``
as root and as an unprivileged user, at each containment level.

``python -m tests.hostile WORKDIR`` builds a site with the attacker, a
victim plugin and a plugin granted one TCP port, starts a host over them
with a token, a config file and a job database in ``WORKDIR``, runs every
attack, and prints one JSON object: attack -> what the attacker got.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
from pathlib import Path
from typing import Any

from plugwarden import Host
from plugwarden.testing.dists import write_plugin

TOKEN = "s3cret-token-of-the-host"
VICTIM_SECRET = "victim-secret-in-memory"
BLOB_MARKER = "victim-binary-argument"

ATTACKER = r"""
import ctypes, errno, json, os, signal, socket, sqlite3, threading, time
from plugwarden import hookimpl

def _try(action):
    try:
        got = action()
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {"ok": True, "got": repr(got)[:200]}

def _secret_in_environs(token):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:
                if token.encode() in file.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found

def _read_mem(pid):
    with open(f"/proc/{pid}/maps") as maps:
        line = maps.readline()
    start = int(line.split("-")[0], 16)
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(start)
        return mem.read(16)

def _threads(count):
    stop = threading.Event()
    started = []
    try:
        for _ in range(count):
            thread = threading.Thread(target=stop.wait, daemon=True)
            try:
                thread.start()  # refused past the limit where a pids cgroup holds it
            except RuntimeError:
                continue
            started.append(thread)
        time.sleep(30)  # the task guard's sweep kills the worker here
        return len(started)
    finally:
        stop.set()

def _memfd(size):
    fd = os.memfd_create("hoard")
    block = b"x" * (1 << 20)
    for _ in range(size >> 20):
        os.write(fd, block)
    time.sleep(30)  # the memory guard's sweep kills the worker here
    return size

def _orphans():
    # A child that leaves a grandchild behind, which then exits: a zombie
    # for good unless something reaps it.
    told_r, told_w = os.pipe()
    go_r, go_w = os.pipe()
    child = os.fork()
    if child == 0:
        grandchild = os.fork()
        if grandchild == 0:
            os.read(go_r, 1)  # until the test has its pid
            os._exit(0)
        os.write(told_w, b"%d\n" % grandchild)
        os._exit(0)
    os.waitpid(child, 0)
    grandchild = int(os.read(told_r, 64))
    os.write(go_w, b"x")  # now it may exit, an orphan
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{grandchild}"):
            return "reaped"
        time.sleep(0.02)
    with open(f"/proc/{grandchild}/stat") as stat:
        return "left: " + stat.read()[:60]

def _inotify():
    libc = ctypes.CDLL(None, use_errno=True)
    taken = []
    while len(taken) < 200:
        fd = libc.inotify_init()
        if fd < 0:
            break
        taken.append(fd)
    for fd in taken:
        os.close(fd)
    return len(taken)

def _descriptors(count):
    opened = []
    try:
        while len(opened) < count:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as exc:
        return {"opened": len(opened), "errno": exc.errno}
    finally:
        for fd in opened:
            os.close(fd)
    return {"opened": len(opened), "errno": None}

def _write(path, text):
    with open(path, "a") as file:
        file.write(text)
    return path

def _connect(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        return port

def _status():
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return {k: fields.get(k) for k in ("NoNewPrivs", "CapEff", "Seccomp")}

def _mount():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tmpfs", b"/mnt", b"tmpfs", 0, None) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return "mounted"

def _segments(pids, marker):
    # Every worker segment (memfd) the host's or the victim's descriptors
    # and mappings lead to, read for the victim's argument.
    found = []
    for pid in pids:
        for folder in (f"/proc/{pid}/fd", f"/proc/{pid}/map_files"):
            for entry in os.listdir(folder):
                path = os.path.join(folder, entry)
                try:
                    if "plugwarden-blobs" not in os.readlink(path):
                        continue
                    with open(path, "rb") as segment:
                        if marker.encode() in segment.read():
                            found.append(path)
                except OSError:
                    continue
    return found

def _shm(name):
    with open(f"/dev/shm/{name}", "wb") as file:
        file.write(b"x" * 4096)
    return name in os.listdir("/dev/shm")

@hookimpl
def validate():
    return True

@hookimpl
def run(tool, args):
    a = args
    attacks = {
        "environ_token": lambda: _secret_in_environs(a["token"]) or None,
        "own_environ": lambda: [k for k, v in os.environ.items() if a["token"] in v] or None,
        "config_file": lambda: open(a["config"]).read()[:40],
        "job_db_read": lambda: open(a["db"], "rb").read(16),
        "job_db_write": lambda: sqlite3.connect(a["db"]).execute(
            "CREATE TABLE IF NOT EXISTS forged (x)").fetchall(),
        "host_environ": lambda: open(f"/proc/{a['host']}/environ", "rb").read()[:20],
        "host_memory": lambda: _read_mem(a["host"]),
        "sibling_memory": lambda: _read_mem(a["victim"]),
        "sibling_module": lambda: _write(a["victim_module"], "\n# appended by the attacker\n"),
        "pth_in_site": lambda: _write(os.path.join(a["site"], "zz-attack.pth"), "import os\n"),
        "pth_in_venv": lambda: _write(os.path.join(a["venv_site"], "zz-attack.pth"), "import os\n"),
        "etc_shadow": lambda: open("/etc/shadow").read(8),
        "mount": _mount,
        "oom_score_adj": lambda: _write("/proc/self/oom_score_adj", "-1000"),
        "tcp_connect": lambda: _connect(a["port"]),
        "processes_seen": lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit())[:8],
        "status": _status,
        "orphans": _orphans,
        "shm": lambda: _shm(a["shm"]),
        "sibling_segment": lambda: _segments([a["host"], a["victim"]], a["blob_marker"]),
        "state_dir_write": lambda: _write(os.path.join(STATE, "mine"), "ok"),
        "tmp_write": lambda: _write(os.path.join(os.environ["TMPDIR"], "mine"), "ok"),
        "inotify": _inotify,
        "descriptors": lambda: _descriptors(5000),
    }
    if tool == "threads":
        return _threads(a["count"])
    if tool == "memfd":
        return _memfd(a["bytes"])
    if tool == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        return "still here"
    if tool == "connect":
        return _try(lambda: _connect(a["port"]))
    return {name: _try(attack) for name, attack in attacks.items()}

@hookimpl
def init(config):
    global STATE
    STATE = config.get("state_dir")
"""

VICTIM = f'''
from plugwarden import hookimpl
SECRET = "{VICTIM_SECRET}"

@hookimpl
def validate():
    return True

@hookimpl
def run(tool, args):
    return SECRET
'''


def run_attacks(workdir: Path) -> dict[str, Any]:
    """Every attack against a host built in ``workdir``; attack -> outcome."""
    site = workdir / "site-packages"
    site.mkdir(parents=True, exist_ok=True)
    write_plugin(site, "attacker", ATTACKER)
    victim = write_plugin(site, "victim", VICTIM)
    write_plugin(site, "selfkill", ATTACKER)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    # The grant names the listener's port (known only now).
    write_plugin(site, "netok", ATTACKER, manifest={"permissions": {"network": [port]}})
    db = workdir / "jobs.sqlite3"
    config_file = workdir / "plugwarden.toml"
    config_file.write_text(
        f'[server]\ntoken = "{TOKEN}"\n[jobs]\npath = "{db}"\n'
        "[plugins.attacker]\nmemory_mb = 200\nmax_tasks = 256\napi_key = 'other-secret'\n"
        "[plugins.netok]\nmemory_mb = 200\n"
    )
    os.environ["PLUGWARDEN_TOKEN"] = TOKEN
    venv_site = next(p for p in sys.path if p.endswith("site-packages") and p != str(site))
    with Host(str(config_file), search_path=[str(site)]) as host:
        host.start()
        sqlite3.connect(db).execute("CREATE TABLE IF NOT EXISTS seen (x)").connection.commit()
        victim_pid = host.worker_pids("victim")[0]
        # A binary argument: it waits in the victim's shared memory now.
        host.call("victim", "t", {"frame": BLOB_MARKER.encode() * 8192})
        args = {
            "token": TOKEN,
            "config": str(config_file),
            "db": str(db),
            "host": os.getpid(),
            "victim": victim_pid,
            "victim_module": str(victim / "__init__.py"),
            "site": str(site),
            "venv_site": venv_site,
            "port": port,
            "shm": f"plugwarden-hostile-{os.getpid()}",
            "blob_marker": BLOB_MARKER,
        }
        outcome: dict[str, Any] = host.call("attacker", "all", args).result or {}
        outcome["host_pid"] = os.getpid()
        outcome["granted_connect"] = host.call("netok", "connect", args).result
        outcome["denied_connect"] = host.call("attacker", "connect", args).result
        for tool, extra in (("threads", {"count": 2000}), ("memfd", {"bytes": 400 << 20})):
            result = host.call("attacker", tool, {**args, **extra})
            outcome[tool] = {"error_type": result.error_type, "error": result.error}
        result = host.call("selfkill", "sigterm", args)
        outcome["sigterm"] = {"error_type": result.error_type, "error": result.error}
        outcome["victim_after"] = host.call("victim", "t", {}).result
        outcome["protections"] = host.status("attacker").info.protections
        outcome["permissions"] = host.status("netok").info.permissions
    listener.close()
    left = Path("/dev/shm", args["shm"])
    outcome["host_shm_left"] = left.exists()
    left.unlink(missing_ok=True)
    return outcome


if __name__ == "__main__":
    print(json.dumps(run_attacks(Path(sys.argv[1]))))
