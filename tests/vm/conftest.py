"""Kernel tests run for real, as root, against the running kernel. Without root they are skipped, and the
skip says why; as root a feature this kernel has must work (nothing here skips on a kernel error)."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.vm)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="needs root (BPF maps and programs): run as root"))
