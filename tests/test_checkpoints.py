"""Weight discovery, the missing-weights message, the status report, the download folder (the downloads
themselves: test_download.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentsync import checkpoints as C
from latentsync.errors import InputError, MissingWeightsError


def _touch(p: Path, data: bytes = b"x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _full_set(root: Path, sub: str = "") -> None:
    _touch(root / sub / "latentsync_unet.pt")
    _touch(root / "whisper" / "tiny.pt")
    _touch(root / "vae" / "config.json", b"{}")
    _touch(root / "vae" / "diffusion_pytorch_model.safetensors")


@pytest.fixture(autouse=True)
def no_pack_checkpoints(tmp_path, monkeypatch):
    """Tests never see real weights a developer may have in <pack>/checkpoints."""
    monkeypatch.setattr(C, "PACK_CHECKPOINTS", tmp_path / "pack_checkpoints")


def test_missing_weights_message_names_everything(tmp_path):
    models, comfy, comfy_vae = tmp_path / "models", tmp_path / "comfy" / "latentsync", tmp_path / "comfy" / "vae"
    with pytest.raises(MissingWeightsError) as e:
        C.find_models("1.6", models_dir=models, search_dirs=[comfy], vae_dirs=[comfy_vae])
    msg = str(e.value)
    for p in (models / "latentsync_unet.pt", comfy / "latentsync_unet.pt", C.PACK_CHECKPOINTS / "latentsync_unet.pt",
              models / "whisper" / "tiny.pt", comfy / "whisper" / "tiny.pt", C.PACK_CHECKPOINTS / "whisper" / "tiny.pt",
              models / "vae", comfy / "vae", C.PACK_CHECKPOINTS / "vae", comfy_vae):
        assert str(p) in msg
    assert f'python -m latentsync download --models-dir "{models}"' in msg
    assert "ByteDance/LatentSync-1.6" in msg and "stabilityai/sd-vae-ft-mse" in msg
    assert msg.index(str(models)) < msg.index(str(comfy)) < msg.index(str(C.PACK_CHECKPOINTS))  # search order
    assert isinstance(e.value, FileNotFoundError)


def test_only_missing_files_are_named(tmp_path):
    _full_set(tmp_path)
    (tmp_path / "whisper" / "tiny.pt").unlink()
    with pytest.raises(MissingWeightsError) as e:
        C.find_models(models_dir=tmp_path)
    msg = str(e.value)
    assert "whisper/tiny.pt" in msg and "Searched for the unet" not in msg and "Searched for the vae" not in msg
    assert "python -m latentsync download" in msg


def test_search_order_and_layout(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _full_set(b)
    _touch(a / "latentsync_unet.pt")
    _touch(a / "unet_config.json", b"{}")
    paths = C.find_models(models_dir=a, search_dirs=[b])
    assert paths == C.ModelPaths(unet=a / "latentsync_unet.pt", whisper=b / "whisper" / "tiny.pt", vae=b / "vae",
                                 version="1.6", unet_config=a / "unet_config.json")
    _full_set(C.PACK_CHECKPOINTS)  # the pack folder comes last
    assert C.find_models(search_dirs=[b]).unet == b / "latentsync_unet.pt"
    assert C.find_models().unet == C.PACK_CHECKPOINTS / "latentsync_unet.pt"
    _touch(a / "latentsync_unet.safetensors")
    (a / "latentsync_unet.pt").unlink()
    assert C.find_models(models_dir=a).unet == a / "latentsync_unet.safetensors"


def test_version_15_lives_in_its_subfolder(tmp_path):
    _full_set(tmp_path)  # a 1.6 set must never be used for 1.5
    with pytest.raises(MissingWeightsError) as e:
        C.find_models("1.5", models_dir=tmp_path)
    assert str(tmp_path / "latentsync-1.5" / "latentsync_unet.pt") in str(e.value)
    assert "--version 1.5" in str(e.value) and "ByteDance/LatentSync-1.5" in str(e.value)
    _touch(tmp_path / "latentsync-1.5" / "latentsync_unet.pt")
    p = C.find_models("1.5", models_dir=tmp_path)
    assert p.unet == tmp_path / "latentsync-1.5" / "latentsync_unet.pt" and p.whisper == tmp_path / "whisper/tiny.pt"
    assert p.version == "1.5"
    with pytest.raises(InputError, match="Unknown LatentSync version"):
        C.find_models("2.0", models_dir=tmp_path)


def test_vae_from_comfy_models_vae(tmp_path):
    root, vdir = tmp_path / "m", tmp_path / "comfy_vae"
    _touch(root / "latentsync_unet.pt")
    _touch(root / "whisper" / "tiny.pt")
    _touch(vdir / "sdxl_vae.safetensors")  # wrong family: never chosen
    _touch(vdir / "ae.safetensors")
    with pytest.raises(MissingWeightsError):
        C.find_models(models_dir=root, vae_dirs=[vdir])
    _touch(vdir / "sd-vae-ft-ema.safetensors")
    assert C.find_models(models_dir=root, vae_dirs=[vdir]).vae == vdir / "sd-vae-ft-ema.safetensors"
    _touch(vdir / "vae-ft-mse-840000-ema-pruned.safetensors")
    assert C.find_models(models_dir=root, vae_dirs=[vdir]).vae == vdir / "vae-ft-mse-840000-ema-pruned.safetensors"
    _full_set(root)  # a vae/ folder in a models root wins over models/vae files
    assert C.find_models(models_dir=root, vae_dirs=[vdir]).vae == root / "vae"


def test_model_status_report(tmp_path):
    _touch(tmp_path / "latentsync_unet.pt")
    report = C.model_status(models_dir=tmp_path)
    assert f"unet     found    {tmp_path / 'latentsync_unet.pt'}" in report
    assert "whisper  MISSING" in report and str(tmp_path / "whisper" / "tiny.pt") in report
    assert f'python -m latentsync download --models-dir "{tmp_path}"' in report
    _full_set(tmp_path)
    assert "All weights found." in C.model_status(models_dir=tmp_path)


def test_download_target_is_the_first_writable_folder(tmp_path, monkeypatch):
    blocker = _touch(tmp_path / "a_file")  # a folder below a file can never be created
    comfy = tmp_path / "comfy" / "models" / "latentsync"  # does not exist yet: its parents are writable
    assert C.download_target(tmp_path / "explicit", [comfy]) == tmp_path / "explicit"
    assert C.download_target(blocker / "models", [comfy]) == comfy
    assert C.download_target(None, [blocker / "x"]) == C.PACK_CHECKPOINTS
    assert not comfy.exists() and not C.PACK_CHECKPOINTS.exists()  # choosing creates nothing
    monkeypatch.setattr(C, "PACK_CHECKPOINTS", blocker / "pack")
    with pytest.raises(MissingWeightsError, match="No writable folder") as e:
        C.download_target(blocker / "m", [blocker / "c"])
    assert str(blocker / "pack") in str(e.value)
