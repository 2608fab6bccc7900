"""Locate the training data that ``train(input_path, output_path)`` is pointed at.

Ptychodus passes a path and nothing else: in the GUI the directory chosen after pressing
Train (input and output are the same directory), in batch mode ``-b train -i DIR`` the
input directory, which also holds ``diffraction.h5`` / ``product.h5`` and ``settings.ini``.
Resolution order, first match wins:

1. ``input_path`` is a ``.npz`` file: it is the training data; no test file.
2. ``input_path`` is a directory holding ``train_data.npz`` (what *Export Training Data*
   is pointed at; the names Ptychodus's own PtychoPINN integration uses): that file, plus
   ``test_data.npz`` for validation when present.
3. A directory in the Ptychodus standard layout (``diffraction.h5`` + ``product.h5``):
   the data is converted in memory exactly as Export Training Data would; any other
   ``.npz`` files there are ignored (and named in the description).
4. A directory with exactly one other ``.npz`` file and no standard-layout files: that file.

Anything else raises :class:`PtychodusInputError` saying what was looked for and what to
do. :attr:`TrainingDataSource.description` says which data was used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptychodus.api.io import StandardFileLayout

from .errors import PtychodusInputError

__all__ = [
    'TEST_DATA_FILENAME',
    'TRAIN_DATA_FILENAME',
    'TrainingDataSource',
    'resolve_training_data',
]

TRAIN_DATA_FILENAME = 'train_data.npz'
TEST_DATA_FILENAME = 'test_data.npz'

_EXPORT_HINT = (
    'use Processing -> Export Training Data first, or choose the folder you exported to'
)


@dataclass(frozen=True)
class TrainingDataSource:
    """Where the training (and optional validation) data comes from.

    Exactly one of ``train_file`` and ``standard_layout_dir`` is set; ``ignored`` lists
    ``.npz`` files beside a standard layout that were not read.
    """

    train_file: Path | None = None
    test_file: Path | None = None
    standard_layout_dir: Path | None = None
    ignored: tuple[Path, ...] = field(default=())

    @property
    def description(self) -> str:
        """One line saying which files are read, e.g. for the processing log."""
        if self.standard_layout_dir is not None:
            text = (
                f'{StandardFileLayout.DIFFRACTION} + {StandardFileLayout.PRODUCT} in '
                f'{self.standard_layout_dir} (Ptychodus standard layout)'
            )
            if self.ignored:
                text += '; ignoring ' + ', '.join(p.name for p in self.ignored)
            return text

        text = str(self.train_file)
        if self.test_file is not None:
            text += f' with validation data {self.test_file.name}'
        return text


def resolve_training_data(input_path: Path) -> TrainingDataSource:
    """Resolve ``input_path`` (file or directory) to the training data to read."""
    path = Path(input_path)

    if path.is_file():
        if path.suffix.lower() != '.npz':
            raise PtychodusInputError(
                f'training data file {path} is not an .npz file: {_EXPORT_HINT}'
            )
        return TrainingDataSource(train_file=path)

    if not path.is_dir():
        raise PtychodusInputError(f'training data path {path} does not exist: {_EXPORT_HINT}')

    train_file = path / TRAIN_DATA_FILENAME
    test_file = path / TEST_DATA_FILENAME

    if train_file.is_file():
        return TrainingDataSource(
            train_file=train_file, test_file=test_file if test_file.is_file() else None
        )

    others = tuple(sorted(p for p in path.glob('*.npz') if p.name != TEST_DATA_FILENAME))
    diffraction = path / StandardFileLayout.DIFFRACTION
    product = path / StandardFileLayout.PRODUCT

    if diffraction.is_file() and product.is_file():
        return TrainingDataSource(standard_layout_dir=path, ignored=others)

    if len(others) == 1:
        return TrainingDataSource(train_file=others[0])

    if len(others) > 1:
        names = ', '.join(p.name for p in others)
        raise PtychodusInputError(
            f'{path} holds several .npz files ({names}); name the training data '
            f'{TRAIN_DATA_FILENAME} (and the validation data {TEST_DATA_FILENAME})'
        )

    raise PtychodusInputError(
        f'no training data in {path}: {_EXPORT_HINT} (looked for {TRAIN_DATA_FILENAME}, '
        f'a single .npz file, or {StandardFileLayout.DIFFRACTION} with '
        f'{StandardFileLayout.PRODUCT})'
    )
