"""The pack as ComfyUI imports it (no server): no side effects on import, the V3 extension lists the nodes, and
the library is importable as a sub-package of the pack (ComfyUI does not put the pack on sys.path)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
COMFY_DIR = Path(sys.prefix) / "comfyui"  # inside the venv (tools/env.sh, tools/env_today.sh)

IMPORT_AS_COMFYUI = r'''
import asyncio, importlib.util, json, os, sys
sys.dont_write_bytecode = True
comfy_dir, pack, base = sys.argv[1], sys.argv[2], sys.argv[3]
sys.argv = ["main.py", "--cpu", "--base-directory", base]
sys.path.insert(0, comfy_dir)
import comfy.options
comfy.options.enable_args_parsing()
import folder_paths, torch
env_before = dict(os.environ)
files_before = sorted(os.listdir(pack)), sorted(os.listdir(base))
paths_before = {k: list(v[0]) for k, v in folder_paths.folder_names_and_paths.items()}
name = pack.replace(".", "_x_")  # what nodes.load_custom_node does
spec = importlib.util.spec_from_file_location(name, os.path.join(pack, "__init__.py"))
module = importlib.util.module_from_spec(spec)
sys.modules[name] = module
spec.loader.exec_module(module)
ext = asyncio.run(module.comfy_entrypoint())
nodes = asyncio.run(ext.get_node_list())
paths_after = {k: list(v[0]) for k, v in folder_paths.folder_names_and_paths.items()}
changed = sorted(k for k in paths_after if paths_after[k] != paths_before.get(k))
print(json.dumps({
    "env_same": dict(os.environ) == env_before,
    "cuda_initialized": torch.cuda.is_initialized(),
    "files_same": (sorted(os.listdir(pack)), sorted(os.listdir(base))) == files_before,
    "changed_folders": changed, "latentsync_paths": paths_after.get("latentsync"),
    "nodes": [n.GET_SCHEMA().node_id for n in nodes],
    "heavy_modules": sorted(m for m in ("diffusers", "mediapipe", "transformers") if m in sys.modules),
}))
'''


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    if not (COMFY_DIR / "folder_paths.py").exists():
        pytest.skip("vendored ComfyUI missing (run tools/env.sh)")
    base = tmp_path_factory.mktemp("comfy_base")
    out = subprocess.run([sys.executable, "-c", IMPORT_AS_COMFYUI, str(COMFY_DIR), str(REPO_ROOT), str(base)],
                         capture_output=True, text=True, timeout=300, cwd=str(base))
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), base


def test_import_has_no_side_effects(imported):
    state, base = imported
    assert state["env_same"] and not state["cuda_initialized"] and state["files_same"]
    assert state["changed_folders"] == ["latentsync"]  # the only edit: ComfyUI's in-memory folder table
    assert state["latentsync_paths"][0] == str(base / "models" / "latentsync")
    assert state["heavy_modules"] == []  # models / face libraries load when a job runs, not at import


def test_extension_lists_the_nodes(imported):
    state, _ = imported
    assert state["nodes"] == ["LatentSyncNode", "VideoLengthAdjuster", "LatentSyncModelLoader", "LatentSyncVideo",
                              "LatentSyncDialogue", "LatentSyncDialogueVideo"]


def test_library_uses_relative_imports_only():
    """ComfyUI loads the pack as a package named after its folder; `latentsync` is then `<pack>.latentsync`, and an
    absolute `from latentsync...` import inside the library fails with ModuleNotFoundError at run time."""
    offenders = []
    for path in sorted((REPO_ROOT / "latentsync").rglob("*.py")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from|import)\s+latentsync(\.|\s|$)", line):
                offenders.append(f"{path.relative_to(REPO_ROOT)}:{no}: {line.strip()}")
    assert not offenders, "use relative imports inside latentsync/:\n" + "\n".join(offenders)
