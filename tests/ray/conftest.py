"""A real local Ray cluster for the session: a head and a second node (a
second raylet on this machine), each with one CPU and a bounded object store.

Ray talks over the machine's interface address even when told 127.0.0.1,
so these tests refuse to run unless the network namespace holds only the
loopback interface: ``tox -e ray`` runs them under ``unshare --net``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

OBJECT_STORE = 80 * 2**20


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    interfaces = sorted(name for _, name in socket.if_nameindex())
    if interfaces != ["lo"]:
        pytest.exit(
            f"The Ray tests need a network namespace with only 'lo' (found {interfaces}); "
            "run them with: tox -e ray",
            returncode=2,
        )
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE},
    )
    try:
        yield cluster
    finally:
        cluster.shutdown()


@pytest.fixture
def second_node(ray_cluster: Cluster) -> Iterator[object]:
    """A second node (a raylet of its own), removed after the test if it is still up."""
    node = ray_cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    ray_cluster.wait_for_nodes()
    try:
        yield node
    finally:
        if node in ray_cluster.worker_nodes:
            ray_cluster.remove_node(node)
