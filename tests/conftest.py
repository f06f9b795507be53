import pytest
import torch

import molfuse as mf


@pytest.fixture
def sched() -> mf.VPSchedule:
    return mf.VPSchedule()


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
