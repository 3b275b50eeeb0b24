"""`gpu` tests run only where plugwarden's GPU probe says CUDA works here."""

import pytest

from plugwarden.core.gpu import decide, run_probe


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    problem = decide(run_probe(with_torch=True))
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"needs a CUDA GPU: {problem.reason}")
    for item in gpu_items:
        item.add_marker(skip)
