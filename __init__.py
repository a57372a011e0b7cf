"""ComfyUI entry point of the LatentSync pack (V3 extension, comfy_api.v0_0_2).

Importing registers ComfyUI's `models/latentsync` folder in folder_paths' in-memory table and nothing else:
no environment variables, no CUDA initialisation, no downloads, no files written.
Outside ComfyUI (e.g. pytest importing the repository root as a package) this module does nothing.
"""

import importlib.util

if importlib.util.find_spec("comfy_api") is not None and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import comfy_entrypoint, register_model_folders

    register_model_folders()
    __all__ = ["comfy_entrypoint"]
