"""The plugwarden pytest plugin (registered through the ``pytest11`` entry point).

Fixtures, all factories:

- ``plugwarden_site``: an empty directory to install plugin distributions in;
- ``plugwarden_plugin(name, source, **options)``: writes a real plugin
  distribution there (see :func:`plugwarden.testing.write_plugin`);
- ``plugwarden_host(config=None, start=True)``: a :class:`~plugwarden.Host`
  that discovers only the plugins of ``plugwarden_site``, closed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from plugwarden.core.host import Host
from plugwarden.testing.dists import write_plugin


@pytest.fixture
def plugwarden_site(tmp_path: Path) -> Path:
    site = tmp_path / "site-packages"
    site.mkdir()
    return site


@pytest.fixture
def plugwarden_plugin(plugwarden_site: Path) -> Callable[..., Path]:
    def make(name: str, source: str, **options: Any) -> Path:
        return write_plugin(plugwarden_site, name, source, **options)

    return make


@pytest.fixture
def plugwarden_host(plugwarden_site: Path) -> Iterator[Callable[..., Host]]:
    hosts: list[Host] = []

    def make(config: Mapping[str, Any] | None = None, *, start: bool = True) -> Host:
        host = Host(dict(config or {}), search_path=[str(plugwarden_site)])
        hosts.append(host)
        if start:
            host.start()
        return host

    try:
        yield make
    finally:
        for host in hosts:
            host.close()
