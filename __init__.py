"""ComfyUI entry point of the LatentSync pack (V3 extension, comfy_api.v0_0_2).

Importing registers ComfyUI's `models/latentsync` folder in folder_paths' in-memory table and nothing else:
no environment variables, no CUDA initialisation, no downloads, no files written.
"""

from .nodes import comfy_entrypoint, register_model_folders

register_model_folders()

__all__ = ["comfy_entrypoint"]
