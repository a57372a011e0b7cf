"""Find, report and download the LatentSync weights.

Layout of a models folder (the same for downloads, the pack's ``checkpoints/`` and ComfyUI's ``models/latentsync``)::

    latentsync_unet.pt            UNet of LatentSync 1.6 (ByteDance/LatentSync-1.6); .safetensors also accepted
    unet_config.json              optional: UNet config next to the UNet (tiny test models); else configs/unet/
    whisper/tiny.pt               OpenAI Whisper tiny (audio encoder)
    vae/                          diffusers folder of stabilityai/sd-vae-ft-mse (config.json + weights)
    latentsync-1.5/latentsync_unet.pt   UNet of LatentSync 1.5 (256 px); whisper/ and vae/ are shared

Search order for every file: the explicit ``models_dir`` → the caller's ``search_dirs`` (the ComfyUI nodes pass
their ``models/latentsync`` folders) → ``<pack>/checkpoints``. The VAE may also be a single file in one of
``vae_dirs`` (ComfyUI's ``models/vae``) whose name says it is sd-vae-ft-mse. This module never imports ComfyUI.

Front ends call ``ensure_models``: find, else download only what is found nowhere (``latentsync.download``:
resumable, progress, no network under HF_HUB_OFFLINE, an unreachable Hub fails within seconds), then find again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .download import CONNECT_TIMEOUT, ProgressCallback, fetch_hub_files
from .errors import MissingWeightsError
from .settings import check_version

logger = logging.getLogger(__name__)

PACK_CHECKPOINTS = Path(__file__).resolve().parents[1] / "checkpoints"
UNET_REPOS = {"1.6": "ByteDance/LatentSync-1.6", "1.5": "ByteDance/LatentSync-1.5"}
VAE_REPO = "stabilityai/sd-vae-ft-mse"
UNET_NAMES = ("latentsync_unet.pt", "latentsync_unet.safetensors")
UNET_CONFIG_NAME = "unet_config.json"
WHISPER_NAME = "whisper/tiny.pt"
VAE_DIR = "vae"
VAE_FILES = ("config.json", "diffusion_pytorch_model.safetensors")
VAE_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
VAE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


@dataclass(frozen=True)
class ModelPaths:
    """Where the weights of one LatentSync version are. ``vae`` is a diffusers folder or a single file;
    ``unet_config`` is the ``unet_config.json`` found next to the UNet (None → our shipped config)."""

    unet: Path
    whisper: Path
    vae: Path
    version: str = "1.6"
    unet_config: Path | None = None

    @property
    def root(self) -> Path:
        """The models folder (where face_landmarker.task is looked for, and fetched to when allowed)."""
        whisper = Path(self.whisper)
        return whisper.parent.parent if whisper.parent.name == "whisper" else Path(self.unet).parent


def version_subdir(version: str) -> str:
    """Sub-folder of a models root that holds the UNet of ``version`` ('' for 1.6, the default)."""
    return "" if check_version(version) == "1.6" else f"latentsync-{version}"


def _roots(models_dir, search_dirs: Iterable) -> list[Path]:
    roots = []
    for d in [models_dir, *search_dirs, PACK_CHECKPOINTS]:
        if d is None or str(d) == "":
            continue
        p = Path(d).expanduser()
        if p not in roots:
            roots.append(p)
    return roots


def _unet_dirs(version: str, roots: list[Path]) -> list[Path]:
    """1.5 and 1.6 UNets have the same file name and key layout, so 1.5 lives only in its sub-folder (a 1.6 UNet
    must never be picked up for 1.5 by accident)."""
    sub = version_subdir(version)
    return [r / sub if sub else r for r in roots]


def _shared_dirs(version: str, roots: list[Path]) -> list[Path]:
    sub = version_subdir(version)
    return [d for r in roots for d in ([r / sub, r] if sub else [r])]


def _is_vae_folder(d: Path) -> bool:
    return (d / "config.json").is_file() and any((d / n).is_file() for n in VAE_WEIGHT_NAMES)


def _vae_file_rank(name: str) -> int | None:
    """0 = certainly sd-vae-ft-mse, 1 = an sd-vae file of the SD-1.x family; None = not usable (e.g. SDXL, Flux)."""
    n = name.lower().replace("_", "-")
    if "xl" in n or "flux" in n or "sd3" in n:
        return None
    if "ft-mse" in n or "ftmse" in n:
        return 0
    if "sd-vae" in n:
        return 1
    return None


def _vae_in(d: Path) -> Path | None:
    if _is_vae_folder(d):
        return d
    if not d.is_dir():
        return None
    ranked = []
    for p in sorted(d.iterdir()):
        rank = _vae_file_rank(p.name)
        if rank is None:
            continue
        if p.is_file() and p.suffix in VAE_FILE_SUFFIXES:
            ranked.append((rank, p))
        elif p.is_dir() and _is_vae_folder(p):
            ranked.append((rank, p))
    return min(ranked)[1] if ranked else None


def _resolve(version, models_dir, search_dirs, vae_dirs):
    """Per component: (found path or None, [paths searched])."""
    version = check_version(version)
    roots = _roots(models_dir, search_dirs)
    result = {}
    searched = []
    for d in _unet_dirs(version, roots):
        searched += [d / n for n in UNET_NAMES]
    result["unet"] = (next((p for p in searched if p.is_file()), None), searched)
    searched = [d / WHISPER_NAME for d in _shared_dirs(version, roots)]
    result["whisper"] = (next((p for p in searched if p.is_file()), None), searched)
    vae_candidates = [d / VAE_DIR for d in _shared_dirs(version, roots)] + [Path(d).expanduser() for d in vae_dirs]
    found = None
    for d in vae_candidates:
        found = _vae_in(d)
        if found is not None:
            break
    result["vae"] = (found, vae_candidates)
    return result


def download_command(version: str = "1.6", models_dir=None) -> str:
    cmd = "python -m latentsync download"
    if str(version) != "1.6":
        cmd += f" --version {version}"
    if models_dir is not None:
        cmd += f' --models-dir "{Path(models_dir).expanduser()}"'
    return cmd


_WHAT = {"unet": "LatentSync UNet (latentsync_unet.pt)", "whisper": "Whisper tiny audio encoder (whisper/tiny.pt)",
         "vae": "VAE sd-vae-ft-mse (vae/config.json + vae/diffusion_pytorch_model.safetensors, or a "
                "vae-ft-mse-840000-ema-pruned.safetensors in ComfyUI's models/vae)"}


def _what(k: str, version: str) -> str:
    if k == "unet" and version_subdir(version):
        return f"LatentSync {version} UNet ({version_subdir(version)}/latentsync_unet.pt)"
    return _WHAT[k]


def _sources(version: str) -> str:
    return (f"Hugging Face repos: {UNET_REPOS[version]} (latentsync_unet.pt, whisper/tiny.pt) and {VAE_REPO} "
            f"(config.json, diffusion_pytorch_model.safetensors → vae/).")


def find_models(version: str = "1.6", models_dir=None, search_dirs: Iterable = (), vae_dirs: Iterable = ()
                ) -> ModelPaths:
    """Locate the weights of ``version``; raises one MissingWeightsError naming every missing file, every path
    searched and the command that downloads them."""
    found = _resolve(version, models_dir, tuple(search_dirs), tuple(vae_dirs))
    missing = [k for k, (p, _) in found.items() if p is None]
    if missing:
        lines = [f"LatentSync {version} weights are missing: " + ", ".join(_what(k, version) for k in missing) + "."]
        for k in missing:
            lines.append(f"Searched for the {k}:")
            lines += [f"  {p}" for p in found[k][1]]
        dest = models_dir if models_dir is not None else None
        lines.append(f"Download them with:  {download_command(version, dest)}")
        lines.append(f"(default destination {PACK_CHECKPOINTS}; needs internet, no HF_HUB_OFFLINE) — or copy them "
                     "by hand from the " + _sources(version))
        raise MissingWeightsError("\n".join(lines))
    unet = found["unet"][0]
    cfg = unet.parent / UNET_CONFIG_NAME
    paths = ModelPaths(unet=unet, whisper=found["whisper"][0], vae=found["vae"][0], version=version,
                       unet_config=cfg if cfg.is_file() else None)
    logger.info("LatentSync %s weights: unet=%s whisper=%s vae=%s", version, paths.unet, paths.whisper, paths.vae)
    return paths


def model_status(version: str = "1.6", models_dir=None, search_dirs: Iterable = (), vae_dirs: Iterable = ()) -> str:
    """A printable report: which files were found where, what is missing and how to get it."""
    found = _resolve(version, models_dir, tuple(search_dirs), tuple(vae_dirs))
    lines = [f"LatentSync {version} model status"]
    for k, (p, searched) in found.items():
        if p is not None:
            lines.append(f"  {k:8s} found    {p}")
            if k == "unet" and (p.parent / UNET_CONFIG_NAME).is_file():
                lines.append(f"  {'':8s} config   {p.parent / UNET_CONFIG_NAME} (custom UNet config)")
        else:
            lines.append(f"  {k:8s} MISSING  {_what(k, version)}; searched:")
            lines += [f"  {'':8s}          {s}" for s in searched]
    if any(p is None for p, _ in found.values()):
        lines.append(f"Get the missing files with:  {download_command(version, models_dir)}")
        lines.append("  " + _sources(version))
    else:
        lines.append("All weights found.")
    return "\n".join(lines)


def _plan(version: str, dest: Path, components: Iterable[str] = ("unet", "whisper", "vae")
          ) -> list[tuple[str, str, Path]]:
    """(repo, file in repo, local target) for every file of ``components`` that ``version`` needs under ``dest``;
    shared whisper/vae files already in a 1.5 sub-folder are reused (never duplicated)."""
    sub = version_subdir(version)
    udir = dest / sub if sub else dest
    plan = []
    if "unet" in components:
        plan.append((UNET_REPOS[version], "latentsync_unet.pt", udir / "latentsync_unet.pt"))
    if "whisper" in components:
        whisper = udir / WHISPER_NAME if sub and (udir / WHISPER_NAME).is_file() else dest / WHISPER_NAME
        plan.append((UNET_REPOS[version], WHISPER_NAME, whisper))
    if "vae" in components:
        vdir = udir / VAE_DIR if sub and _is_vae_folder(udir / VAE_DIR) else dest / VAE_DIR
        plan += [(VAE_REPO, f, vdir / f) for f in VAE_FILES]
    return plan


def _writable(folder: Path) -> bool:
    """Whether ``folder`` exists writable or can be created (its nearest existing parent is writable)."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def download_target(models_dir=None, search_dirs: Iterable = ()) -> Path:
    """Where missing weights are downloaded: the first writable of ``models_dir``, the first of ``search_dirs``
    (the ComfyUI nodes pass ``models/latentsync``), ``<pack>/checkpoints``."""
    roots = _roots(models_dir, tuple(search_dirs))
    for root in roots:
        if _writable(root):
            return root
    raise MissingWeightsError("No writable folder to download the weights into; tried: "
                              + ", ".join(str(r) for r in roots))


def ensure_models(version: str = "1.6", models_dir=None, search_dirs: Iterable = (), vae_dirs: Iterable = (), *,
                  download: bool = True, progress: ProgressCallback | None = None, bar: bool = True,
                  endpoint: str | None = None, timeout: float = CONNECT_TIMEOUT) -> ModelPaths:
    """The weights of ``version``, downloading the missing files first when ``download`` is on.

    Only what ``find_models`` does not find anywhere is fetched (from the Hugging Face Hub, resumable, with a
    terminal bar when ``bar`` and ``progress(done_bytes, total_bytes, info)`` callbacks) into
    ``download_target(models_dir, search_dirs)``. ``HF_HUB_OFFLINE``, or a Hub that does not answer within
    ``timeout`` seconds, ends at once (no retries) with the MissingWeightsError of ``find_models`` preceded by
    the reason; ``endpoint`` overrides the Hub address (default: ``HF_ENDPOINT`` or huggingface.co)."""
    search_dirs, vae_dirs = tuple(search_dirs), tuple(vae_dirs)
    try:
        return find_models(version, models_dir, search_dirs, vae_dirs)
    except MissingWeightsError as missing:
        if not download:
            raise MissingWeightsError(f"{missing}\n(Automatic download is off.)") from None
    found = _resolve(version, models_dir, search_dirs, vae_dirs)
    dest = None
    try:
        dest = download_target(models_dir, search_dirs)
        plan = _plan(version, dest, [k for k, (p, _) in found.items() if p is None])
        logger.info("Downloading the missing LatentSync %s weights into %s", version, dest)
        fetch_hub_files(plan, endpoint=endpoint, timeout=timeout, progress=progress, bar=bar)
    except MissingWeightsError as failed:
        raise MissingWeightsError(f"Cannot download the missing weights{f' into {dest}' if dest else ''}: {failed}\n"
                                  + _still_missing(version, models_dir, search_dirs, vae_dirs)) from None
    return find_models(version, models_dir, search_dirs, vae_dirs)


def _still_missing(version: str, models_dir, search_dirs: tuple, vae_dirs: tuple) -> str:
    """find_models' message after a failed download (what is still missing, every path searched, how to get it)."""
    try:
        paths = find_models(version, models_dir, search_dirs, vae_dirs)
    except MissingWeightsError as missing:
        return str(missing)
    return f"(The LatentSync {version} weights found are complete: {paths.unet}, {paths.whisper}, {paths.vae}.)"


def download_models(version: str = "1.6", dest=None, *, progress: ProgressCallback | None = None, bar: bool = True,
                    endpoint: str | None = None, timeout: float = CONNECT_TIMEOUT) -> ModelPaths:
    """Download what ``dest`` (default ``<pack>/checkpoints``) lacks for ``version``; files already there are
    skipped. Same downloader, progress and offline rules as ``ensure_models``."""
    version = check_version(version)
    dest = Path(dest).expanduser() if dest is not None else PACK_CHECKPOINTS
    todo = [(repo, name, target) for repo, name, target in _plan(version, dest) if not target.is_file()]
    try:
        fetch_hub_files(todo, endpoint=endpoint, timeout=timeout, progress=progress, bar=bar)
    except MissingWeightsError as failed:
        raise MissingWeightsError(f"Cannot download into {dest}: {failed}\n"
                                  + _still_missing(version, None if dest == PACK_CHECKPOINTS else dest, (), ())
                                  ) from None
    return find_models(version, models_dir=dest)

