"""Shared test fixtures: paths to the repo and the parity fixtures, and a session-wide tiny model set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

LEGACY_MEDIAPIPE = "legacy_mediapipe"
LANDMARKER = "face_landmarker.task"


def pytest_configure(config):
    config.addinivalue_line("markers", f"{LEGACY_MEDIAPIPE}: needs mediapipe's legacy solutions API "
                                       "(FaceMesh, mediapipe <= 0.10.21); skipped where the installed one lacks it")


def pytest_collection_modifyitems(config, items):
    legacy_only = [item for item in items if item.get_closest_marker(LEGACY_MEDIAPIPE)]
    if not legacy_only:
        return
    from importlib.metadata import version

    from latentsync.face.landmarks import solutions_available

    if solutions_available():
        return
    skip = pytest.mark.skip(reason=f"mediapipe {version('mediapipe')} has no legacy solutions API "
                                   "(Tasks API only); the Tasks backend is tested instead")
    for item in legacy_only:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return REPO_ROOT / "tests" / "fixtures" / "parity"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A complete random-weight LatentSync 1.6 model set written by tools/make_tiny_models.py, plus a link to the
    real ``face_landmarker.task`` (tests/fixtures/models): mediapipe without the legacy API reads it from there."""
    out = tmp_path_factory.mktemp("tiny_models")
    subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "make_tiny_models.py"), str(out), "--version", "1.6"],
                   check=True, cwd=REPO_ROOT)
    (out / LANDMARKER).symlink_to(REPO_ROOT / "tests" / "fixtures" / "models" / LANDMARKER)
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
