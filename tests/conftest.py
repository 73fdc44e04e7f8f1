"""Shared test fixtures. Tests run on a bare Python with the test extras; no ComfyUI needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = Path(os.environ.get("EVERANIMATE_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    d = SHARED_FIXTURES / "parity"
    if not (d / "meta.json").exists():
        pytest.skip(f"parity fixtures not found at {d} (they live in ../shared/fixtures beside the checkout)")
    return d

# The node helpers (nodes/sockets.py, nodes/images.py, nodes/wan_patch.py) import ComfyUI only
# inside functions, so their unit tests run on a bare Python with the repository root on sys.path.
import sys  # noqa: E402

if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
