import os

import numpy as np
import pytest


@pytest.fixture
def rng(request):
    # Fresh inputs every run; the seed is printed so a failure can be replayed
    # with FLASHATTN_TEST_SEED.
    seed = int(os.environ.get("FLASHATTN_TEST_SEED", int.from_bytes(os.urandom(4), "little")))
    print(f"seed={seed} ({request.node.name})")
    return np.random.default_rng(seed)


def pytest_collection_modifyitems(config, items):
    # GPU tests report as skipped (not silently deselected) on machines without CUDA.
    try:
        import torch

        have_cuda = torch.cuda.is_available()
    except ImportError:
        have_cuda = False
    if have_cuda:
        return
    skip = pytest.mark.skip(reason="no CUDA device (torch with CUDA not available)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
