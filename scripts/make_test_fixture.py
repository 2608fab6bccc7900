"""Write the small deterministic test data set ``tests/fixtures/minimal_dataset_v1.npz``.

Usage: ``python scripts/make_test_fixture.py [--output PATH]``. Prints the path, size and
SHA-256 of the file. The content is defined by ``ptychopinn.simulate.make_minimal_fixture``
(64 integer raster positions, N = 64, dead-leaves object, aperture probe, 1e5 photons per
pattern, with objectGuess and labels); the same code and library versions give the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

from ptychopinn.simulate import FIXTURE_NAME, make_minimal_fixture

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / FIXTURE_NAME


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="fixture path (.npz)")
    args = parser.parse_args(argv)
    path = make_minimal_fixture(args.output)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{path}  {path.stat().st_size} bytes  sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
