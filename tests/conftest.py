"""tests/kernel and tests/vm run for real, as root, against the running kernel (tests/vm inside the VM
matrix). Without root they are skipped, and the skip says why; as root a feature this kernel has must
work: nothing there skips on a kernel error."""

from __future__ import annotations

import os

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
NOT_ROOT = pytest.mark.skip(reason="needs root (BPF maps and programs): run as root")
MARKS = {os.path.join(HERE, "kernel"): pytest.mark.kernel, os.path.join(HERE, "vm"): pytest.mark.vm}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for folder, mark in MARKS.items():
            if str(item.fspath).startswith(folder + os.sep):
                item.add_marker(mark)
                if os.geteuid() != 0:
                    item.add_marker(NOT_ROOT)
