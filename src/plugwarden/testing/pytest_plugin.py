"""The plugwarden pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, all factories (``pytest --fixtures`` shows each one's docstring):

- ``plugwarden_site``: an empty directory to install plugin distributions in;
- ``plugwarden_plugin(name, source, **options)``: writes a real plugin
  distribution there, from a source string or a package directory (see
  :func:`plugwarden.testing.write_plugin`);
- ``plugwarden_host(config=None, start=True)``: a :class:`~plugwarden.Host`
  that discovers only the plugins of ``plugwarden_site``, closed at teardown;
  its jobs database is the test's own (``jobs.sqlite3`` in a folder beside
  the test's ``tmp_path``, shared by the hosts of one test) unless ``[jobs]
  path`` is given; its plugins may read and write the test's ``tmp_path``
  (where a test hands them files), besides what their manifests declare;
- ``plugwarden_server(config=None)``: such a host served by a real uvicorn
  server on a free loopback port; returns a :class:`LiveServer` (``url``,
  ``host``). The host starts in the background, as under ``plugwarden serve``;
- ``plugwarden_faults``: a :class:`~plugwarden.testing.FaultPlan` whose
  faults the workers of hosts made afterwards carry out;
- ``plugwarden_fake_gpu(kind)``: the GPU the pre-flight sees, for this test.

None of them imports a plugin into the test process or changes ``sys.path``
or ``sys.modules``; every host and server they start is closed at teardown.

The marker ``gpu``: such tests run only where plugwarden's GPU probe says
CUDA works (torch included), and skip cleanly, with the reason, elsewhere.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from plugwarden.host.host import Host
from plugwarden.testing.dists import write_plugin
from plugwarden.testing.faults import FaultPlan, fake_gpu

if TYPE_CHECKING:  # uvicorn is imported only by tests that start a server
    import uvicorn


@pytest.fixture
def plugwarden_site(tmp_path: Path) -> Path:
    """An empty directory (a temporary ``site-packages``) for plugin
    distributions; hosts of ``plugwarden_host`` discover only what is here."""
    site = tmp_path / "site-packages"
    site.mkdir()
    return site


@pytest.fixture
def plugwarden_plugin(plugwarden_site: Path) -> Callable[..., Path]:
    """``make(name, source, **options) -> package directory``: a real plugin
    distribution (package + ``.dist-info`` with its entry point) in
    ``plugwarden_site``. ``source``: the module's text, or a directory to
    copy as the package. Options: ``manifest`` (a dict, or TOML text),
    ``requires`` (Requires-Dist lines), ``version``, ``module``, ``dist``,
    ``entry_point``."""

    def make(name: str, source: str | Path, **options: Any) -> Path:
        return write_plugin(plugwarden_site, name, source, **options)

    return make


def _test_config(config: Mapping[str, Any] | None, site: Path) -> dict[str, Any]:
    """``config`` with the test's own jobs database unless it names one (in
    a folder beside the test's ``tmp_path``: no grant may hold the host's
    database), and the test's ``tmp_path`` readable and writable by every
    plugin, besides what each declares (the files a test hands its plugins)."""
    data = dict(config or {})
    defaults = dict(data.get("defaults") or {})
    permissions = dict(defaults.get("permissions") or {})
    for key in ("read", "write"):
        permissions[key] = [*permissions.get(key, []), str(site.parent)]
    data["defaults"] = {**defaults, "permissions": permissions}
    jobs = dict(data.get("jobs") or {})
    if "path" not in jobs:
        folder = site.parent.parent / f"{site.parent.name}-host"
        folder.mkdir(exist_ok=True)
        jobs["path"] = str(folder / "jobs.sqlite3")
    data["jobs"] = jobs
    return data


@pytest.fixture
def plugwarden_host(plugwarden_site: Path) -> Iterator[Callable[..., Host]]:
    """``make(config=None, start=True) -> Host`` over the plugins of
    ``plugwarden_site`` (real worker processes); ``config`` is a dict shaped
    like the TOML file. The jobs database is the test's own. Closed at teardown."""
    hosts: list[Host] = []

    def make(config: Mapping[str, Any] | None = None, *, start: bool = True) -> Host:
        host = Host(_test_config(config, plugwarden_site), search_path=[str(plugwarden_site)])
        hosts.append(host)
        if start:
            host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            host.close()


@dataclass
class LiveServer:
    url: str
    host: Host
    server: uvicorn.Server
    thread: threading.Thread

    def wait_started(self, timeout_s: float = 60.0) -> None:
        """Wait until the host has finished starting its plugins."""
        deadline = time.monotonic() + timeout_s
        while not self.host.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the host did not finish starting")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def plugwarden_server(plugwarden_site: Path) -> Iterator[Callable[..., LiveServer]]:
    """``make(config=None, wait=True) -> LiveServer``: such a host served by a
    real uvicorn server on a free loopback port (``.url``, ``.host``);
    ``wait`` waits until its plugins have started. Stopped at teardown."""
    import uvicorn

    from plugwarden.web.server import build, uvicorn_config

    servers: list[LiveServer] = []

    def make(config: Mapping[str, Any] | None = None, *, wait: bool = True) -> LiveServer:
        host = Host(_test_config(config, plugwarden_site), search_path=[str(plugwarden_site)])
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        app = build(host, host.config)
        server = uvicorn.Server(
            uvicorn_config(app, host.config, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listener]}, name="plugwarden-test-server"
        )
        thread.start()
        live = LiveServer(f"http://127.0.0.1:{port}", host, server, thread)
        servers.append(live)
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        if wait:
            live.wait_started()
        return live

    try:
        yield make
    finally:
        for live in servers:
            live.stop()


@pytest.fixture
def plugwarden_faults(tmp_path: Path) -> Iterator[FaultPlan]:
    """A :class:`~plugwarden.testing.FaultPlan`: ``inject(plugin, kind,
    hook="run", call=1, once=False, **params)`` makes that call crash, hang,
    exceed memory, raise... in the real worker. Request it before the host
    (workers read the plan's path from their environment)."""
    plan = FaultPlan(tmp_path / "faults.json").activate()
    try:
        yield plan
    finally:
        plan.deactivate()


@pytest.fixture
def plugwarden_fake_gpu() -> Iterator[Callable[[str], None]]:
    """``fake(kind)``: the GPU pre-flight of hosts started afterwards in this
    test sees ``none``, ``present``, ``broken-driver`` or ``no-cuda``."""
    with contextlib.ExitStack() as stack:

        def fake(kind: str) -> None:
            stack.enter_context(fake_gpu(kind))

        yield fake


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped cleanly without one")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``gpu`` tests run only where the probe says CUDA works; elsewhere they skip."""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    from plugwarden.preflight.gpu import decide, run_probe

    problem = decide(run_probe(with_torch=True))
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {problem.reason}")
    for item in gpu_items:
        item.add_marker(skip)
