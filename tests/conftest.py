"""Shared test fixtures: paths to the repo and the parity fixtures, and a session-wide tiny model set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return REPO_ROOT / "tests" / "fixtures" / "parity"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A complete random-weight LatentSync 1.6 model set written by tools/make_tiny_models.py."""
    out = tmp_path_factory.mktemp("tiny_models")
    subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "make_tiny_models.py"), str(out), "--version", "1.6"],
                   check=True, cwd=REPO_ROOT)
    return out
