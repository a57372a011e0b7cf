"""LatentSync 1.6 lip-sync as a framework-free library (no ComfyUI imports).

Importing this package is cheap and has no side effects: heavy modules (torch models, mediapipe, PyAV)
are imported by the submodules that need them.
"""

__version__ = "0.1.0"
