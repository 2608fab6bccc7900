"""Tests for the NPZ data contract (ptychopinn.data) and atomic output (ptychopinn._io)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from ptychopinn._io import atomic_output, atomic_write_bytes, atomic_write_text
from ptychopinn.data import DataContractError, RawData, counts_to_amplitude
from ptychopinn.errors import SaveError

N = 8
NPOS = 12


def _arrays(n: int = NPOS, big_n: int = N, seed: int = 0) -> dict[str, np.ndarray]:
    """Canonical npz content with every optional key, non-trivial values."""
    rng = np.random.default_rng(seed)
    return {
        "diffraction": rng.random((n, big_n, big_n)).astype(np.float32) * 5,
        "xcoords": rng.random(n) * 40 + 10,
        "ycoords": rng.random(n) * 40 + 10,
        "probeGuess": (rng.random((big_n, big_n)) + 1j * rng.random((big_n, big_n))).astype(
            np.complex64
        ),
        "objectGuess": np.exp(1j * rng.random((64, 70))).astype(np.complex64),
        "scan_index": np.arange(n, dtype=np.int64) % 3,
        "xcoords_start": rng.random(n) * 40,
        "ycoords_start": rng.random(n) * 40,
        "Y": (rng.random((n, big_n, big_n)) * np.exp(1j * rng.random((n, big_n, big_n)))).astype(
            np.complex64
        ),
    }


def _minimal(n: int = NPOS, big_n: int = N) -> dict[str, np.ndarray]:
    full = _arrays(n, big_n)
    return {k: full[k] for k in ("diffraction", "xcoords", "ycoords", "probeGuess")}


def _write(tmp_path: Path, arrays: dict, name: str = "scan.npz") -> Path:
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _load_error(tmp_path: Path, arrays: dict) -> str:
    path = _write(tmp_path, arrays)
    with pytest.raises(DataContractError) as info:
        RawData.from_file(path)
    return str(info.value)


# ---------------------------------------------------------------- loading, round trip
def test_round_trip_is_exact_with_canonical_dtypes(tmp_path):
    arrays = _arrays()
    raw = RawData.from_file(_write(tmp_path, arrays))
    assert raw.n_positions == NPOS and raw.N == N
    assert raw.diffraction.dtype == np.float32
    assert raw.xcoords.dtype == np.float64 and raw.ycoords.dtype == np.float64
    assert raw.probe_guess.dtype == np.complex64
    assert raw.object_guess.dtype == np.complex64
    assert raw.scan_index.dtype == np.int64
    assert raw.labels.dtype == np.complex64

    out = tmp_path / "copy.npz"
    raw.save(out)
    with np.load(out, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(arrays)
        for key, value in arrays.items():
            assert npz[key].dtype == value.dtype, key
            np.testing.assert_array_equal(npz[key], value, err_msg=key)
    again = RawData.from_file(out)
    for attr in ("diffraction", "xcoords", "ycoords", "probe_guess", "object_guess",
                 "scan_index", "xcoords_start", "ycoords_start", "labels"):
        np.testing.assert_array_equal(getattr(again, attr), getattr(raw, attr), err_msg=attr)


def test_minimal_file_has_no_optional_fields(tmp_path):
    raw = RawData.from_file(_write(tmp_path, _minimal()))
    assert raw.object_guess is None and raw.scan_index is None and raw.labels is None
    assert raw.xcoords_start is None and raw.ycoords_start is None
    out = tmp_path / "min_out.npz"
    raw.save(out)
    with np.load(out) as npz:
        assert sorted(npz.files) == ["diffraction", "probeGuess", "xcoords", "ycoords"]


def test_dtypes_are_normalised_on_load(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = arrays["diffraction"].astype(np.float64)
    arrays["xcoords"] = np.arange(NPOS, dtype=np.int32)
    arrays["ycoords"] = arrays["ycoords"].astype(np.float32)
    arrays["probeGuess"] = np.abs(arrays["probeGuess"]).astype(np.float64)  # real probe
    arrays["scan_index"] = np.zeros(NPOS, dtype=np.float64)  # integral floats are fine
    raw = RawData.from_file(_write(tmp_path, arrays))
    assert raw.diffraction.dtype == np.float32
    assert raw.xcoords.dtype == np.float64 and raw.ycoords.dtype == np.float64
    assert raw.probe_guess.dtype == np.complex64
    np.testing.assert_array_equal(raw.probe_guess.imag, 0)
    np.testing.assert_allclose(raw.probe_guess.real, arrays["probeGuess"], rtol=1e-6)
    np.testing.assert_array_equal(raw.xcoords, np.arange(NPOS))
    assert raw.scan_index.dtype == np.int64


def test_diff3d_key_is_accepted(tmp_path):
    arrays = _minimal()
    arrays["diff3d"] = arrays.pop("diffraction")
    raw = RawData.from_file(_write(tmp_path, arrays))
    np.testing.assert_array_equal(raw.diffraction, arrays["diff3d"])


def test_diffraction_key_wins_over_diff3d(tmp_path):
    arrays = _minimal()
    arrays["diff3d"] = arrays["diffraction"] + 1.0
    raw = RawData.from_file(_write(tmp_path, arrays))
    np.testing.assert_array_equal(raw.diffraction, arrays["diffraction"])


def test_legacy_diffraction_layout_is_transposed_with_warning(tmp_path):
    arrays = _minimal()
    canonical = arrays["diffraction"]
    arrays["diffraction"] = np.transpose(canonical, (1, 2, 0))  # (N, N, n)
    with pytest.warns(UserWarning, match="FORMAT-001"):
        raw = RawData.from_file(_write(tmp_path, arrays))
    assert raw.diffraction.shape == (NPOS, N, N)
    np.testing.assert_array_equal(raw.diffraction, canonical)


def test_canonical_layout_does_not_warn(tmp_path):
    path = _write(tmp_path, _minimal())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RawData.from_file(path)


def test_legacy_label_layouts(tmp_path):
    arrays = _minimal()
    labels = _arrays()["Y"]
    arrays["Y"] = labels[..., None]  # (n, N, N, 1)
    raw = RawData.from_file(_write(tmp_path, arrays))
    np.testing.assert_array_equal(raw.labels, labels)

    arrays["Y"] = np.transpose(labels, (1, 2, 0))  # (N, N, n)
    with pytest.warns(UserWarning, match="FORMAT-001"):
        raw = RawData.from_file(_write(tmp_path, arrays, "legacy_y.npz"))
    np.testing.assert_array_equal(raw.labels, labels)


def test_label_amp_and_phase_combine(tmp_path):
    arrays = _minimal()
    rng = np.random.default_rng(3)
    amp = rng.random((NPOS, N, N)).astype(np.float32)
    phase = (rng.random((NPOS, N, N)) * 6 - 3).astype(np.float32)
    arrays["label_amp"], arrays["label_phase"] = amp, phase
    raw = RawData.from_file(_write(tmp_path, arrays))
    assert raw.labels.dtype == np.complex64
    np.testing.assert_allclose(np.abs(raw.labels), amp, rtol=1e-5)
    np.testing.assert_allclose(np.angle(raw.labels), phase, atol=1e-5)


@pytest.mark.parametrize("given,absent", [("label_amp", "label_phase"),
                                          ("label_phase", "label_amp")])
def test_label_half_pair_is_an_error(tmp_path, given, absent):
    arrays = _minimal()
    arrays[given] = np.ones((NPOS, N, N), dtype=np.float32)
    msg = _load_error(tmp_path, arrays)
    assert given in msg and absent in msg


def test_label_amp_phase_shape_mismatch(tmp_path):
    arrays = _minimal()
    arrays["label_amp"] = np.ones((NPOS, N, N), dtype=np.float32)
    arrays["label_phase"] = np.ones((NPOS, N, N - 1), dtype=np.float32)
    assert "label_phase" in _load_error(tmp_path, arrays)


# ---------------------------------------------------------------- file-level errors
def test_missing_file(tmp_path):
    with pytest.raises(DataContractError, match="not found"):
        RawData.from_file(tmp_path / "nope.npz")


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(DataContractError, match="is a directory, not a data file"):
        RawData.from_file(tmp_path)


def test_text_file_renamed_npz(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("this is not an archive\n")
    with pytest.raises(DataContractError, match="not an .npz archive.*zip signature"):
        RawData.from_file(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataContractError, match="not an .npz archive.*empty"):
        RawData.from_file(path)


def test_truncated_npz(tmp_path):
    path = _write(tmp_path, _minimal())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataContractError, match="not a readable .npz archive.*BadZipFile"):
        RawData.from_file(path)


def test_corrupted_member_crc(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = np.full((NPOS, N, N), 2.0, dtype=np.float32)
    path = _write(tmp_path, arrays)
    data = bytearray(path.read_bytes())
    needle = np.float32(2.0).tobytes() * 4
    pos = data.find(needle)
    assert pos > 0
    data[pos : pos + 4] = np.float32(3.0).tobytes()  # payload changed, CRC not
    path.write_bytes(bytes(data))
    with pytest.raises(DataContractError, match="'diffraction'.*corrupt"):
        RawData.from_file(path)


def test_npy_instead_of_npz(tmp_path):
    path = tmp_path / "single.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((NPOS, N, N), dtype=np.float32))
    with pytest.raises(DataContractError, match="expected an .npz archive"):
        RawData.from_file(path)


def test_object_array_is_refused(tmp_path):
    arrays = _minimal()
    arrays["xcoords"] = np.array([float(v) for v in arrays["xcoords"]], dtype=object)
    msg = _load_error(tmp_path, arrays)
    assert "'xcoords'" in msg and "object" in msg


@pytest.mark.parametrize("key", ["xcoords", "ycoords", "probeGuess"])
def test_missing_required_key_lists_keys_present(tmp_path, key):
    arrays = _minimal()
    del arrays[key]
    msg = _load_error(tmp_path, arrays)
    assert f"'{key}'" in msg
    for other in arrays:
        assert other in msg


def test_missing_diffraction_mentions_both_names(tmp_path):
    arrays = _minimal()
    del arrays["diffraction"]
    msg = _load_error(tmp_path, arrays)
    assert "'diffraction'" in msg and "'diff3d'" in msg and "xcoords" in msg


def test_error_message_names_the_file(tmp_path):
    arrays = _minimal()
    arrays["diffraction"][0, 0, 0] = np.nan
    assert str(tmp_path / "scan.npz") in _load_error(tmp_path, arrays)


# ---------------------------------------------------------------- content errors
def test_wrong_ndim_diffraction(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = arrays["diffraction"].reshape(NPOS, N * N)
    assert "3-D" in _load_error(tmp_path, arrays)


def test_non_square_patterns(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = np.ones((NPOS, N, N + 2), dtype=np.float32)
    assert "square" in _load_error(tmp_path, arrays)


def test_empty_scan(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = np.ones((0, N, N), dtype=np.float32)
    arrays["xcoords"] = np.zeros(0)
    arrays["ycoords"] = np.zeros(0)
    assert "empty scan" in _load_error(tmp_path, arrays)


@pytest.mark.parametrize("key", ["xcoords", "ycoords"])
def test_coordinate_length_mismatch(tmp_path, key):
    arrays = _minimal()
    arrays[key] = arrays[key][:-1]
    msg = _load_error(tmp_path, arrays)
    assert "xcoords and ycoords differ in length" in msg
    assert str(NPOS - 1) in msg and str(NPOS) in msg


def test_diffraction_length_mismatch(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = arrays["diffraction"][:-2]
    msg = _load_error(tmp_path, arrays)
    assert f"{NPOS - 2} patterns" in msg and f"{NPOS} positions" in msg


@pytest.mark.parametrize("key,value", [
    ("scan_index", np.arange(NPOS - 1)),
    ("xcoords_start", np.zeros(NPOS + 1)),
])
def test_optional_length_mismatch(tmp_path, key, value):
    arrays = _minimal()
    arrays[key] = value
    arrays.setdefault("xcoords_start", np.zeros(NPOS))
    arrays.setdefault("ycoords_start", np.zeros(NPOS))
    msg = _load_error(tmp_path, arrays)
    assert key in msg and f"({NPOS},)" in msg


def test_labels_length_mismatch(tmp_path):
    arrays = _minimal()
    arrays["Y"] = np.ones((NPOS - 1, N, N), dtype=np.complex64)
    msg = _load_error(tmp_path, arrays)
    assert "'Y'" in msg and str((NPOS, N, N)) in msg


def test_start_coordinates_need_both(tmp_path):
    arrays = _minimal()
    arrays["xcoords_start"] = np.zeros(NPOS)
    msg = _load_error(tmp_path, arrays)
    assert "xcoords_start" in msg and "ycoords_start" in msg


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_diffraction(tmp_path, bad):
    arrays = _minimal()
    arrays["diffraction"][3, 1, 2] = bad
    arrays["diffraction"][5, 0, 0] = bad
    msg = _load_error(tmp_path, arrays)
    assert "2 non-finite" in msg and "diffraction" in msg


def test_negative_diffraction(tmp_path):
    arrays = _minimal()
    arrays["diffraction"][0, :, 0] = -1e-6
    msg = _load_error(tmp_path, arrays)
    assert f"{N} negative" in msg


@pytest.mark.parametrize("key", ["xcoords", "ycoords", "xcoords_start"])
def test_non_finite_coordinates(tmp_path, key):
    arrays = _minimal()
    arrays["xcoords_start"] = np.zeros(NPOS)
    arrays["ycoords_start"] = np.zeros(NPOS)
    arrays[key] = arrays[key].copy()
    arrays[key][4] = np.nan
    msg = _load_error(tmp_path, arrays)
    assert key in msg and "non-finite" in msg


def test_complex_diffraction_is_rejected(tmp_path):
    arrays = _minimal()
    arrays["diffraction"] = arrays["diffraction"].astype(np.complex64)
    msg = _load_error(tmp_path, arrays)
    assert "diffraction" in msg and "real" in msg


def test_probe_shape_must_match_n(tmp_path):
    arrays = _minimal()
    arrays["probeGuess"] = np.ones((N + 2, N + 2), dtype=np.complex64)
    msg = _load_error(tmp_path, arrays)
    assert "probeGuess" in msg and f"({N}, {N})" in msg


@pytest.mark.parametrize("shape", [(N,), (1, 2, N, N)])
def test_probe_wrong_ndim(tmp_path, shape):
    arrays = _minimal()
    arrays["probeGuess"] = np.ones(shape, dtype=np.complex64)
    assert "probeGuess" in _load_error(tmp_path, arrays)


def test_probe_modes_are_accepted(tmp_path):
    arrays = _minimal()
    arrays["probeGuess"] = np.ones((3, N, N), dtype=np.complex128)
    raw = RawData.from_file(_write(tmp_path, arrays))
    assert raw.probe_guess.shape == (3, N, N) and raw.probe_guess.dtype == np.complex64


def test_object_guess_must_be_2d(tmp_path):
    arrays = _minimal()
    arrays["objectGuess"] = np.ones((2, 32, 32), dtype=np.complex64)
    msg = _load_error(tmp_path, arrays)
    assert "objectGuess" in msg and "2-D" in msg


def test_non_integer_scan_index(tmp_path):
    arrays = _minimal()
    arrays["scan_index"] = np.linspace(0, 1, NPOS)
    assert "scan_index" in _load_error(tmp_path, arrays)


def test_constructor_validates_too():
    arrays = _minimal()
    with pytest.raises(DataContractError, match="probe_guess"):
        RawData(arrays["diffraction"], arrays["xcoords"], arrays["ycoords"],
                np.ones((N, N + 1)))
    with pytest.raises(DataContractError, match="dtype object"):
        RawData(arrays["diffraction"], np.array(list(arrays["xcoords"]), dtype=object),
                arrays["ycoords"], arrays["probeGuess"])


def test_legacy_layout_in_constructor_warns():
    arrays = _minimal()
    with pytest.warns(UserWarning, match="FORMAT-001"):
        raw = RawData(np.transpose(arrays["diffraction"], (1, 2, 0)), arrays["xcoords"],
                      arrays["ycoords"], arrays["probeGuess"])
    np.testing.assert_array_equal(raw.diffraction, arrays["diffraction"])


def test_validate_catches_later_mutation():
    arrays = _minimal()
    raw = RawData(arrays["diffraction"], arrays["xcoords"], arrays["ycoords"],
                  arrays["probeGuess"])
    raw.xcoords = raw.xcoords[:-1]
    raw.ycoords = raw.ycoords[:-1]
    with pytest.raises(DataContractError, match=f"{NPOS} patterns but .* {NPOS - 1} positions"):
        raw.validate()


# ---------------------------------------------------------------- subset
def test_subset_selects_positions_in_order(tmp_path):
    raw = RawData.from_file(_write(tmp_path, _arrays()))
    idx = np.array([5, 0, 7])
    sub = raw.subset(idx)
    assert sub.n_positions == 3
    for attr in ("diffraction", "xcoords", "ycoords", "scan_index", "xcoords_start",
                 "ycoords_start", "labels"):
        np.testing.assert_array_equal(getattr(sub, attr), getattr(raw, attr)[idx], err_msg=attr)
    np.testing.assert_array_equal(sub.probe_guess, raw.probe_guess)
    np.testing.assert_array_equal(sub.object_guess, raw.object_guess)
    mask = np.zeros(NPOS, dtype=bool)
    mask[[2, 9]] = True
    np.testing.assert_array_equal(raw.subset(mask).xcoords, raw.xcoords[[2, 9]])


@pytest.mark.parametrize("bad", [[], [NPOS], [-1], [[0, 1]], [0.5]])
def test_subset_bad_indices(bad):
    arrays = _minimal()
    raw = RawData(arrays["diffraction"], arrays["xcoords"], arrays["ycoords"],
                  arrays["probeGuess"])
    with pytest.raises(DataContractError, match="subset"):
        raw.subset(bad)


# ---------------------------------------------------------------- counts
def test_counts_to_amplitude_is_sqrt():
    counts = np.array([[0, 1, 4], [9, 2, 1e6]], dtype=np.float64)
    amp = counts_to_amplitude(counts)
    assert amp.dtype == np.float32
    np.testing.assert_allclose(amp, np.sqrt(counts), rtol=1e-7)
    ints = counts_to_amplitude(np.array([16, 25], dtype=np.uint16))
    np.testing.assert_array_equal(ints, np.array([4, 5], dtype=np.float32))


def test_counts_to_amplitude_rejects_bad_values():
    with pytest.raises(DataContractError, match="0 non-finite and 2 negative"):
        counts_to_amplitude(np.array([1.0, -1e-9, -3.0]))
    with pytest.raises(DataContractError, match="1 non-finite"):
        counts_to_amplitude(np.array([1.0, np.nan]))
    with pytest.raises(DataContractError, match="real"):
        counts_to_amplitude(np.array([1 + 1j]))


# ---------------------------------------------------------------- atomic writes
def test_save_failure_keeps_old_file(tmp_path, monkeypatch):
    arrays = _minimal()
    path = _write(tmp_path, arrays)
    before = path.read_bytes()
    raw = RawData.from_file(path)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(SaveError, match="could not write .*scan.npz: disk full"):
        raw.subset([0, 1]).save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["scan.npz"]


def test_save_writes_exact_name(tmp_path):
    arrays = _minimal()
    raw = RawData(arrays["diffraction"], arrays["xcoords"], arrays["ycoords"],
                  arrays["probeGuess"])
    target = tmp_path / "sub" / "data.bin"
    raw.save(target)
    assert sorted(os.listdir(target.parent)) == ["data.bin"]
    np.testing.assert_array_equal(RawData.from_file(target).diffraction, raw.diffraction)


def test_atomic_output_success_and_failure(tmp_path):
    target = tmp_path / "out.png"
    with atomic_output(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".png" and tmp != target
        tmp.write_bytes(b"new")
        assert not target.exists()
    assert target.read_bytes() == b"new"

    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("writer failed")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.png"]


def test_atomic_write_helpers(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert target.stat().st_mode & 0o777 == 0o640  # mode of the replaced file kept
    atomic_write_text(tmp_path / "b.json", "{\"k\": 1}")
    assert (tmp_path / "b.json").read_text() == "{\"k\": 1}"
    with pytest.raises(ValueError, match="directory"):
        atomic_write_bytes(tmp_path, b"x")


# ----------------------------------------------------------------- memory-mapped loading
def _scan_with_patterns(n: int = 40, N: int = 32) -> RawData:
    rng = np.random.default_rng(4)
    return RawData(diffraction=rng.random((n, N, N), dtype=np.float32),
                   xcoords=np.arange(n, dtype=float) + 20, ycoords=np.full(n, 20.0),
                   probe_guess=np.ones((N, N), np.complex64))


@pytest.fixture
def small_mmap_threshold(monkeypatch):
    import ptychopinn.data as data_module

    monkeypatch.setattr(data_module, "MMAP_MIN_BYTES", 1024)
    return data_module


def test_uncompressed_large_members_are_memory_mapped_copy_on_write(tmp_path,
                                                                    small_mmap_threshold):
    raw = _scan_with_patterns()
    path = tmp_path / "scan.npz"
    raw.save(path)
    before = path.read_bytes()
    loaded = RawData.from_file(path)
    assert isinstance(loaded.diffraction.base, np.memmap)
    np.testing.assert_array_equal(loaded.diffraction, raw.diffraction)
    assert not isinstance(loaded.xcoords.base, np.memmap)  # small members are read
    loaded.diffraction[0, 0, 0] = 123.0  # a private copy of the page: the file is unchanged
    assert path.read_bytes() == before
    assert RawData.from_file(path).diffraction[0, 0, 0] == raw.diffraction[0, 0, 0]


def test_compressed_members_are_read_not_mapped(tmp_path, small_mmap_threshold):
    raw = _scan_with_patterns()
    path = tmp_path / "scan.npz"
    np.savez_compressed(path, **raw.to_arrays())
    loaded = RawData.from_file(path)
    assert not isinstance(loaded.diffraction.base, np.memmap)
    np.testing.assert_array_equal(loaded.diffraction, raw.diffraction)


def test_a_corrupt_mapped_member_fails_its_crc_check(tmp_path, small_mmap_threshold):
    path = tmp_path / "scan.npz"
    _scan_with_patterns().save(path)
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF  # inside the diffraction member
    path.write_bytes(bytes(data))
    with pytest.raises(DataContractError, match="could not be read, the archive is corrupt"):
        RawData.from_file(path)


def test_a_mapped_member_counts_once_in_the_memory_check(tmp_path, small_mmap_threshold,
                                                         monkeypatch):
    raw = _scan_with_patterns()
    asked: list[int] = []
    monkeypatch.setattr(small_mmap_threshold, "memory_shortfall",
                        lambda needed, what: asked.append(needed))
    for name, writer in (("plain.npz", np.savez), ("packed.npz", np.savez_compressed)):
        writer(tmp_path / name, **raw.to_arrays())
        RawData.from_file(tmp_path / name)
    declared = sum(a.nbytes for a in raw.to_arrays().values())
    mapped = raw.diffraction.nbytes + raw.probe_guess.nbytes  # the members >= 1024 bytes
    assert asked == [2 * declared - mapped, 2 * declared]
