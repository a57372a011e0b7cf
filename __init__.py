"""ComfyUI entry point of the LatentSync pack (V3 extension, comfy_api.v0_0_2).

ComfyUI imports this folder as a package and awaits ``comfy_entrypoint``, which registers ComfyUI's
`models/latentsync` folder in folder_paths' in-memory table and returns the extension — nothing else: no
environment variables, no CUDA initialisation, no downloads, no files written. Importing the package alone does
nothing (so tools can import it outside ComfyUI). The library itself lives in `latentsync/` and never imports
ComfyUI.
"""


async def comfy_entrypoint():
    from .nodes import LatentSyncExtension, register_model_folders

    register_model_folders()
    return LatentSyncExtension()


__all__ = ["comfy_entrypoint"]
