import pytest
import torch

import molfuse as mf


@pytest.fixture
def sched() -> mf.VPSchedule:
    return mf.VPSchedule()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


# The core's tests run on tiny tensors, where one thread is faster and steadier than two
# fighting over 2 cores.
torch.set_num_threads(1)
