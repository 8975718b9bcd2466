"""Loads the scripts of tests/vm and tools/ (run as programs, not packages) as modules for their unit
tests."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

VMDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "vm")
TOOLSDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")


def load(name: str) -> Any:
    """tests/vm/NAME.py as the module NAME (its sibling imports resolved from tests/vm)."""
    return _load(name, VMDIR)


def tool(name: str) -> Any:
    """tools/NAME.py as the module NAME."""
    return _load(name, TOOLSDIR)


def _load(name: str, folder: str) -> Any:
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(folder, f"{name}.py"))
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while the class is made
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(folder)
