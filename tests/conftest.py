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


# Time per test folder (setup + call + teardown of each test), printed at the end of every run so a
# slow folder is seen; the folders mirror the package (core, fusion, campaign, training, modalities/*).
_FOLDER_TIME: dict[str, list[float]] = {}


def _folder(nodeid: str) -> str:
    parts = nodeid.split("::")[0].split("/")
    return "/".join(parts[:-1]) or "."


def pytest_runtest_logreport(report):
    entry = _FOLDER_TIME.setdefault(_folder(report.nodeid), [0.0, 0])
    entry[0] += report.duration
    entry[1] += report.when == "call"


def pytest_terminal_summary(terminalreporter):
    if not _FOLDER_TIME:
        return
    terminalreporter.section("time per test folder")
    total = sum(t for t, _ in _FOLDER_TIME.values())
    for folder, (seconds, n) in sorted(_FOLDER_TIME.items(), key=lambda kv: -kv[1][0]):
        terminalreporter.write_line(f"{folder:<32} {n:>5} tests {seconds:>8.1f} s")
    terminalreporter.write_line(f"{'total':<32} {sum(n for _, n in _FOLDER_TIME.values()):>5} tests {total:>8.1f} s")
