"""Property-based fuzzing of the NPZ loader (specs/errors.md, "Data files").

Whatever a file holds -- random keys, dtypes, shapes and values, object arrays, or the
bytes of a valid file truncated or overwritten -- ``RawData.from_file`` either returns a
valid scan or raises ``DataContractError``; never any other exception.  Examples are
bounded (small arrays, a fixed number of examples, derandomized) so the test takes a few
seconds and fails the same way every time.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ptychopinn.data import DataContractError, RawData

KNOWN_KEYS = ("diffraction", "diff3d", "xcoords", "ycoords", "probeGuess", "objectGuess",
              "scan_index", "xcoords_start", "ycoords_start", "Y", "label_amp", "label_phase")
DTYPES = st.sampled_from([
    np.bool_, np.int8, np.uint8, np.int16, np.int32, np.int64, np.uint64, np.float16,
    np.float32, np.float64, np.complex64, np.complex128, np.dtype("U3"), np.dtype("S2"),
    np.dtype("M8[s]"),
])
FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def _any_array(dtype) -> st.SearchStrategy[np.ndarray]:
    shape = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
    return hnp.arrays(dtype, shape)


random_array = DTYPES.flatmap(_any_array)


def _valid(n: int, big_n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n * 10 + big_n)
    return {
        "diffraction": rng.random((n, big_n, big_n), dtype=np.float32),
        "xcoords": rng.random(n) * 10 + big_n,
        "ycoords": rng.random(n) * 10 + big_n,
        "probeGuess": (rng.random((big_n, big_n)) + 1j).astype(np.complex64),
    }


@st.composite
def scan_files(draw) -> dict[str, np.ndarray]:
    """A valid small scan, then a few mutations: a key replaced by a random array, a key
    dropped, a random key added, special values injected, a dtype changed."""
    arrays = _valid(draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "drop", "add", "special", "astype"]))
        key = draw(st.sampled_from(KNOWN_KEYS))
        if action == "replace" or (action == "add" and key not in arrays):
            arrays[key] = draw(random_array)
        elif action == "drop":
            arrays.pop(key, None)
        elif action == "add":
            arrays[draw(st.text("abcxyz_", min_size=1, max_size=6))] = draw(random_array)
        elif key in arrays and arrays[key].size and arrays[key].dtype.kind in "fc":
            value = draw(st.sampled_from([np.nan, np.inf, -np.inf, -1.0, 1e39, 1e300]))
            flat = arrays[key].astype(np.complex128 if arrays[key].dtype.kind == "c"
                                      else np.float64).reshape(-1)
            flat[draw(st.integers(0, flat.size - 1))] = value
            arrays[key] = flat.reshape(arrays[key].shape)
        elif key in arrays:
            arrays[key] = arrays[key].astype(draw(DTYPES), copy=False) if arrays[
                key].dtype.kind not in "US" else arrays[key]
    return arrays


def _load(path: Path) -> None:
    """The property: a valid scan or a DataContractError, nothing else."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # legacy-layout warnings are allowed
        try:
            raw = RawData.from_file(path)
        except DataContractError:
            return
    raw.validate()  # what loads is valid


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "scan.npz"


@FUZZ
@given(arrays=scan_files(), with_object=st.booleans())
def test_random_npz_contents_raise_only_the_data_contract_error(scratch, arrays, with_object):
    if with_object:  # a pickled object array among the keys (np.savez pickles it)
        arrays = {**arrays, "ycoords": np.array([None, "x"], dtype=object)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open(scratch, "wb") as fh:
            np.savez(fh, **arrays)
    _load(scratch)


@FUZZ
@given(cut=st.floats(0.0, 1.0), flips=st.lists(st.tuples(st.floats(0.0, 1.0),
                                                          st.integers(0, 255)), max_size=4))
def test_truncated_or_overwritten_files_raise_only_the_data_contract_error(scratch, cut, flips):
    with open(scratch, "wb") as fh:
        np.savez(fh, **_valid(3, 4))
    data = bytearray(scratch.read_bytes())
    for where, value in flips:
        data[min(len(data) - 1, int(where * len(data)))] = value
    scratch.write_bytes(bytes(data[: max(0, int(cut * len(data)))] if cut < 1 else data))
    _load(scratch)


def test_the_fuzzer_reaches_both_outcomes(scratch):
    """Guards the property against a generator that only ever builds broken files."""
    with open(scratch, "wb") as fh:
        np.savez(fh, **_valid(3, 4))
    assert RawData.from_file(scratch).n_positions == 3
    with open(scratch, "wb") as fh:
        np.savez(fh, **{**_valid(3, 4), "xcoords": np.zeros(2)})
    with pytest.raises(DataContractError):
        RawData.from_file(scratch)
