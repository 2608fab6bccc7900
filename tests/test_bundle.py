"""Model bundle: exact round trip, atomic writes, every read error, no pickle execution."""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import pickle
import zipfile
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from ptychopinn.config import ExecutionConfig, ModelConfig, TrainingConfig
from ptychopinn.errors import SaveError
from ptychopinn_torch import bundle as bundle_mod
from ptychopinn_torch.bundle import (
    BUNDLE_FILENAME,
    BUNDLE_FORMAT_VERSION,
    MANIFEST_DIGEST_KEY,
    BundleError,
    BundleNotFoundError,
    bundle_sha256,
    manifest_digest,
    read_bundle,
    read_lightning_checkpoint,
    save_bundle,
)


def _inputs(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ModelConfig(N=64, gridsize=2)
    return {
        "state_dict": {
            "encoder.conv.weight": torch.randn(4, 1, 3, 3, generator=gen),
            "encoder.conv.bias": torch.randn(4, generator=gen, dtype=torch.float64),
            "bn.num_batches_tracked": torch.tensor(17, dtype=torch.int64),
            "log_scale": torch.tensor(0.25),
        },
        "configs": {
            "model": model.to_dict(),
            "training": TrainingConfig(model=model, nphotons=1e9).to_dict(),
            "execution": ExecutionConfig(learning_rate=2e-4).to_dict(),
        },
        "intensity_scale": 987.654321,
        "probe": (rng.normal(size=(64, 64)) + 1j * rng.normal(size=(64, 64))).astype(
            np.complex64
        ),
        "training_summary": {"epochs": 3, "train_loss": [3.5, 2.25, 1.125], "best": "epoch=2"},
    }


def _rewrite(path: Path, *, drop=(), replace=None, manifest_edit=None, resign=True) -> None:
    """Rebuild the zip at ``path`` with members dropped/replaced or the manifest edited.

    ``resign`` recomputes the manifest digest after the edit, as a faulty writer would
    have produced it, so that the checks after the digest are reached."""
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    for name in drop:
        members.pop(name)
    members.update(replace or {})
    if manifest_edit is not None:
        manifest = json.loads(members["manifest.json"])
        manifest_edit(manifest)
        if resign and MANIFEST_DIGEST_KEY in manifest:
            manifest[MANIFEST_DIGEST_KEY] = manifest_digest(manifest)
        members["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_round_trip_is_exact(tmp_path):
    inputs = _inputs()
    path = save_bundle(tmp_path / BUNDLE_FILENAME, **inputs)
    assert path == tmp_path / "ptychopinn_model.zip"
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "weights.pt"]
        weights = zf.read("weights.pt")
        manifest = json.loads(zf.read("manifest.json"))

    got = read_bundle(path)
    assert got.state_dict.keys() == inputs["state_dict"].keys()
    for name, tensor in inputs["state_dict"].items():
        assert got.state_dict[name].dtype == tensor.dtype
        assert torch.equal(got.state_dict[name], tensor)
    assert got.configs == inputs["configs"]
    assert ModelConfig.from_dict(got.configs["model"]) == ModelConfig(N=64, gridsize=2)
    assert got.intensity_scale == inputs["intensity_scale"]
    assert got.probe.dtype == np.complex64
    np.testing.assert_array_equal(got.probe, inputs["probe"])
    assert got.training_summary == inputs["training_summary"]
    assert got.format_version == BUNDLE_FORMAT_VERSION == 1
    assert got.package_version == importlib.metadata.version("ptychopinn")
    assert got.created_utc.endswith("Z")

    assert manifest["format"] == "ptychopinn-bundle"
    assert manifest["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert manifest["tensors"]["encoder.conv.weight"] == {"shape": [4, 1, 3, 3], "dtype": "float32"}
    assert manifest["tensors"]["__probe__"] == {"shape": [64, 64], "dtype": "complex64"}
    assert got.manifest == manifest


def test_round_trip_restores_a_working_module_and_directory_target(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    inputs = _inputs()
    inputs["state_dict"] = net.state_dict()
    inputs["probe"] = torch.from_numpy(inputs["probe"])  # tensors are accepted too
    path = save_bundle(tmp_path, **inputs)  # a directory: the standard name inside it
    assert path == tmp_path / BUNDLE_FILENAME
    fresh = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))
    contents = read_bundle(tmp_path)
    fresh.load_state_dict(contents.state_dict)
    x = torch.randn(3, 5)
    assert torch.equal(fresh(x), net(x))
    np.testing.assert_array_equal(contents.probe, inputs["probe"].numpy())


def test_summary_numpy_values_and_nan_are_stored_as_json(tmp_path):
    inputs = _inputs()
    inputs["training_summary"] = {
        "final_loss": np.float32(0.5),
        "history": np.array([1.0, 0.5]),
        "diverged_loss": float("nan"),
        "output": Path("some/dir"),
    }
    got = read_bundle(save_bundle(tmp_path / "b.zip", **inputs))
    assert got.training_summary == {
        "final_loss": 0.5,
        "history": [1.0, 0.5],
        "diverged_loss": None,
        "output": "some/dir",
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"state_dict": {"__probe__": torch.zeros(1)}}, "reserved"),
        ({"state_dict": {"w": np.zeros(3)}}, "must be a torch.Tensor"),
        ({"configs": {"training": {}}}, "'model' entry"),
        ({"configs": {"model": {"x": object()}}}, r"configs\.model\.x has type object"),
        ({"configs": {"model": {"x": float("inf")}}}, "not finite"),
        ({"intensity_scale": 0.0}, "intensity_scale must be finite and > 0"),
        ({"intensity_scale": float("nan")}, "intensity_scale must be finite"),
        ({"probe": np.zeros((4, 5), np.complex64)}, "probe must have shape"),
        ({"probe": np.full((4, 4), np.nan, np.complex64)}, "NaN"),
    ],
)
def test_save_rejects_bad_arguments(tmp_path, change, match):
    inputs = _inputs()
    inputs.update(change)
    with pytest.raises(ValueError, match=match):
        save_bundle(tmp_path / "b.zip", **inputs)
    assert not (tmp_path / "b.zip").exists()


def test_save_is_atomic_on_failure(tmp_path, monkeypatch):
    path = save_bundle(tmp_path / BUNDLE_FILENAME, **_inputs(seed=0))
    before = path.read_bytes()

    real_writestr = zipfile.ZipFile.writestr

    def failing_writestr(self, name, data, *args, **kwargs):
        if name == "weights.pt":  # the manifest is already in the temp file by now
            real_writestr(self, name, data[: len(data) // 2], *args, **kwargs)
            raise OSError("disk full (simulated)")
        return real_writestr(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", failing_writestr)
    with pytest.raises(SaveError, match=r"could not write .*disk full.*intact"):
        save_bundle(path, **_inputs(seed=1))
    with pytest.raises(SaveError, match="disk full"):
        save_bundle(tmp_path / "new.zip", **_inputs(seed=1))
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert not (tmp_path / "new.zip").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [BUNDLE_FILENAME]  # no temp left
    assert torch.equal(
        read_bundle(path).state_dict["log_scale"], _inputs(seed=0)["state_dict"]["log_scale"]
    )


def test_missing_path(tmp_path):
    with pytest.raises(BundleNotFoundError, match="not found") as info:
        read_bundle(tmp_path / "nope.zip")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, BundleError) and isinstance(info.value, ValueError)
    with pytest.raises(BundleNotFoundError):
        read_bundle(tmp_path)  # directory without ptychopinn_model.zip


def test_not_a_zip(tmp_path):
    path = tmp_path / "wts.h5.zip"
    path.write_bytes(b"\x89HDF\r\n\x1a\n not really")
    with pytest.raises(BundleError, match="not a zip archive"):
        read_bundle(path)


def test_zip_without_manifest(tmp_path):
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(BundleError, match="not a PtychoPINN model bundle \\(no manifest.json\\)"):
        read_bundle(path)


def test_manifest_not_json(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    _rewrite(path, replace={"manifest.json": b"{not json"})
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        read_bundle(path)


def test_wrong_format_name(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    _rewrite(path, manifest_edit=lambda m: m.update(format="something-else"))
    with pytest.raises(BundleError, match="not a PtychoPINN model bundle: manifest format"):
        read_bundle(path)


def test_newer_format_version(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    _rewrite(path, manifest_edit=lambda m: m.update(format_version=2, package_version="9.0"))
    with pytest.raises(
        BundleError, match=r"newer PtychoPINN \(package 9.0\): bundle format 2 > supported 1; upgrade"
    ):
        read_bundle(path)
    _rewrite(path, manifest_edit=lambda m: m.update(format_version="1"))
    with pytest.raises(BundleError, match="format_version must be a positive integer"):
        read_bundle(path)


@pytest.mark.parametrize(
    ("edit", "drop", "match"),
    [
        (None, ("weights.pt",), "missing part: weights.pt"),
        (lambda m: m["configs"].pop("model"), (), "missing part: configs.model"),
        (lambda m: m.pop("configs"), (), "missing part: configs.model"),
        (lambda m: m.pop("intensity_scale"), (), "missing part: intensity_scale"),
        (lambda m: m.pop("weights_sha256"), (), "missing part: weights_sha256"),
        (lambda m: m.pop("tensors"), (), "missing part: tensors"),
    ],
)
def test_missing_parts(tmp_path, edit, drop, match):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    _rewrite(path, drop=drop, manifest_edit=edit)
    with pytest.raises(BundleError, match=match):
        read_bundle(path)


@pytest.mark.parametrize(
    "edit",
    [
        lambda m: m["configs"]["model"].update(amp_activation="relu"),
        lambda m: m["configs"]["training"].update(batch_size=-4),
        lambda m: m.update(intensity_scale=m["intensity_scale"] * 2),
        lambda m: m["training_summary"].update(final_train_loss=0.0),
        lambda m: m.pop("package_version"),
    ],
)
def test_edited_manifest_is_refused(tmp_path, edit):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    _rewrite(path, manifest_edit=edit, resign=False)
    with pytest.raises(BundleError, match="the manifest was modified"):
        read_bundle(path)


def test_bundle_without_manifest_digest_still_loads(tmp_path):
    """Bundles written before the digest existed carry none; they load unverified."""
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    _rewrite(path, manifest_edit=lambda m: m.pop(MANIFEST_DIGEST_KEY), resign=False)
    assert read_bundle(path).configs["model"]["N"] == 64


def test_checksum_mismatch(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs(seed=0))
    with zipfile.ZipFile(save_bundle(tmp_path / "other.zip", **_inputs(seed=1))) as zf:
        other_weights = zf.read("weights.pt")  # valid weights, same names, other values
    _rewrite(path, replace={"weights.pt": other_weights})
    with pytest.raises(BundleError, match="checksum mismatch for weights.pt.*corrupt"):
        read_bundle(path)


def test_flipped_byte_is_reported_as_corrupt(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("weights.pt")
    # inside the stored (uncompressed) weights payload, past its local header
    pos = info.header_offset + 30 + len(info.filename) + 200
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="corrupt"):
        read_bundle(path)


def test_tensor_list_must_match_manifest(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    payload = _torch_bytes({"only": torch.zeros(2), "__probe__": torch.zeros(2, 2, dtype=torch.complex64)})
    _rewrite(
        path,
        replace={"weights.pt": payload},
        manifest_edit=lambda m: m.update(weights_sha256=hashlib.sha256(payload).hexdigest()),
    )
    with pytest.raises(BundleError, match="does not match the manifest's tensor list"):
        read_bundle(path)


class _MakesMarker:
    """Unpickling this calls open(marker, "w"), i.e. creates a file: a stand-in exploit."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["torch", "raw-pickle"])
def test_pickle_payload_is_refused_without_running(tmp_path, container):
    marker = tmp_path / "pwned"
    control_marker = tmp_path / "control"

    def payload(m: Path) -> bytes:
        if container == "raw-pickle":  # a bare pickle, no torch container around it
            return pickle.dumps({"evil": _MakesMarker(m)}, protocol=2)
        obj = {"w": torch.zeros(2), "__probe__": torch.zeros(2, 2, dtype=torch.complex64),
               "evil": _MakesMarker(m)}
        return _torch_bytes(obj)

    # Control: the payload is live; an unrestricted load does create its marker.
    if container == "torch":
        torch.load(io.BytesIO(payload(control_marker)), weights_only=False)
    else:
        pickle.loads(payload(control_marker))
    assert control_marker.exists()

    path = save_bundle(tmp_path / "b.zip", **_inputs())
    evil = payload(marker)
    _rewrite(
        path,
        replace={"weights.pt": evil},
        manifest_edit=lambda m: m.update(weights_sha256=hashlib.sha256(evil).hexdigest()),
    )
    with pytest.raises(BundleError, match="not a plain tensor file and was refused") as info:
        read_bundle(path)
    assert not marker.exists()
    assert "Unsupported global: GLOBAL io.open" in str(info.value)  # names the culprit
    assert "weights_only` set to `False`" not in str(info.value)  # no advice to disable it


def test_bundle_sha256(tmp_path):
    path = save_bundle(tmp_path / "b.zip", **_inputs())
    assert bundle_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(BundleNotFoundError):
        bundle_sha256(tmp_path / "missing.zip")


def test_legacy_name_is_not_hdf5_claim():
    assert bundle_mod.BUNDLE_FILENAME == "ptychopinn_model.zip"
    assert not bundle_mod.BUNDLE_FILENAME.endswith(".h5.zip")


# ---------------------------------------------------------------- Lightning checkpoints


class _TinyModule(pl.LightningModule):
    def __init__(self, configs: dict, intensity_scale: float):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        (x,) = batch
        return self.net(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def test_read_lightning_checkpoint_from_real_trainer(tmp_path):
    torch.manual_seed(0)
    configs = {"model": ModelConfig().to_dict(), "training": {"nepochs": 1}}
    module = _TinyModule(configs=configs, intensity_scale=12.5)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)),
                                       batch_size=4)
    ckpt_cb = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "checkpoints", save_last=True)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=False, callbacks=[ckpt_cb],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )
    trainer.fit(module, data)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.exists()

    state_dict, hparams = read_lightning_checkpoint(last)
    assert hparams == {"configs": configs, "intensity_scale": 12.5}
    assert state_dict.keys() == module.state_dict().keys()
    for name, tensor in module.state_dict().items():
        assert torch.equal(state_dict[name], tensor)


class _Custom:
    def __init__(self, value=3):
        self.value = value


def test_read_lightning_checkpoint_errors_and_allow_list(tmp_path):
    with pytest.raises(BundleNotFoundError):
        read_lightning_checkpoint(tmp_path / "missing.ckpt")

    not_ckpt = tmp_path / "list.ckpt"
    torch.save([torch.zeros(1)], not_ckpt)
    with pytest.raises(BundleError, match="not a PtychoPINN training checkpoint") as info:
        read_lightning_checkpoint(not_ckpt)
    # The advice names what a command-line user can give, not a Python-only argument.
    assert "ptychopinn_model.zip" in str(info.value)
    assert "extra_safe_globals" not in str(info.value)

    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint at all\n")
    with pytest.raises(BundleError, match="not a file written by torch.save") as info:
        read_lightning_checkpoint(text)
    assert "extra_safe_globals" not in str(info.value)

    custom = tmp_path / "custom.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"x": _Custom()}}, custom)
    with pytest.raises(BundleError, match="refused.*_Custom") as info:
        read_lightning_checkpoint(custom)
    assert "extra_safe_globals" not in str(info.value)
    # a caller that trusts the class may allow it explicitly
    state_dict, hparams = read_lightning_checkpoint(custom, extra_safe_globals=[_Custom])
    assert torch.equal(state_dict["w"], torch.ones(2))
    assert isinstance(hparams["x"], _Custom) and hparams["x"].value == 3

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _MakesMarker(marker)}}, evil)
    with pytest.raises(BundleError, match="refused"):
        read_lightning_checkpoint(evil)
    assert not marker.exists()
