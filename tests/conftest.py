"""Shared test fixtures: paths to the repo and the parity fixtures, and a session-wide tiny model set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture(scope="session")
def comfy_pack():
    """The pack imported in this process the way ComfyUI imports it (a package, ``latentsync_pack``, loaded from the
    repository's ``__init__.py``), with the vendored ComfyUI importable (CPU mode). Its ``latentsync`` is the
    pack's own copy of the library (``latentsync_pack.latentsync``), as inside ComfyUI."""
    import importlib.util

    comfy_dir = Path(sys.prefix) / "comfyui"  # inside the venv (tools/env.sh, tools/env_today.sh)
    if not (comfy_dir / "main.py").is_file():
        pytest.skip("the vendored ComfyUI is not built (tools/env.sh)")
    if str(comfy_dir) not in sys.path:
        sys.path.append(str(comfy_dir))  # appended: ComfyUI's top-level names never shadow ours
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # no GPU here; must be set before comfy.model_management is imported
    spec = importlib.util.spec_from_file_location("latentsync_pack", REPO_ROOT / "__init__.py",
                                                  submodule_search_locations=[str(REPO_ROOT)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["latentsync_pack"] = pack
    spec.loader.exec_module(pack)
    import latentsync_pack.memory_limiter  # noqa: F401
    import latentsync_pack.nodes  # noqa: F401

    return pack


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
