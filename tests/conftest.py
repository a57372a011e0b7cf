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


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module (restored after it): the tiny models' ops are so small that
    thread hand-offs dominate on busy shared cores. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from pipeline_support import torch_threads

    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def pipe(tiny_models):
    """The tiny model set at 64 px faces, loaded once per process (see tests/pipeline_support.py)."""
    from pipeline_support import pipeline_for, small_model_dir

    return pipeline_for(str(small_model_dir(tiny_models)))
