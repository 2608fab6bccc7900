"""Flags and validation shared by the command lines (no torch: parsing stays fast)."""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

from ptychopinn._io import check_output_dir, existing_outputs
from ptychopinn.config import ACCELERATORS, ConfigError
from ptychopinn.errors import InputError, InputWarning, RuntimeFault

# argparse takes "-1e-3" for a flag (its own pattern knows only -1 and -1.5), so a
# negative value never reached the range check that explains it.
_NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE
)


class CliArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line for any invalid value, and that reads
    negative-looking numbers (``-1e-3``) as values, so range checks can speak."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_reporting_errors(parser: argparse.ArgumentParser, work: Callable[[], Any]) -> Any:
    """Run ``work``; an :class:`~ptychopinn.errors.InputError` exits 2 and a
    :class:`~ptychopinn.errors.RuntimeFault` exits 1, each with one line on stderr
    (``<prog>: error: <message>``) and no traceback."""
    try:
        return work()
    except InputError as exc:
        error_naming_flag(parser, _one_line(exc))
    except RuntimeFault as exc:
        parser.exit(1, f"{parser.prog}: error: {_one_line(exc)}\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@contextmanager
def command_line_process(prog: str) -> Iterator[None]:
    """Settings every command line needs while it runs (restored afterwards, so calling
    ``main`` from Python leaves the caller's warning settings alone): deprecation
    warnings shown, every warning printed as one line ``<prog>: warning: ...`` (once per
    message), and a file-size limit reported as an error (SIGXFSZ would otherwise kill
    the process)."""

    def one_line(message: Warning | str, category: type[Warning], filename: str,
                 lineno: int, file: Any = None, line: str | None = None) -> None:
        try:
            (file or sys.stderr).write(f"{prog}: warning: {_one_line(Warning(message))}\n")
        except OSError:  # stderr closed: nothing to tell
            pass

    with warnings.catch_warnings():  # restores filters and showwarning on exit
        show_deprecation_warnings()
        warnings.simplefilter("default", InputWarning)
        warnings.showwarning = one_line
        if hasattr(signal, "SIGXFSZ"):
            try:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            except ValueError:  # not the main thread: leave the signal as it is
                pass
        yield


def check_input_file(parser: argparse.ArgumentParser, flag: str, path: Path | None) -> None:
    """Exit 2 unless ``path`` (when given) is an existing regular file."""
    if path is None or path.is_file():
        return
    if path.is_dir():
        parser.error(f"{flag} {path} is a directory, not a data file; give the path of an "
                     ".npz file")
    parser.error(f"{flag} {path}: no such file")


def check_fresh_output_dir(
    parser: argparse.ArgumentParser, flag: str, path: Path, *, overwrite: bool,
    resume: bool | None = None,
) -> None:
    """Exit 2 unless ``path`` can be written and holds no earlier outputs, or the user
    chose what happens to them (``--overwrite``, or ``--resume`` where it exists)."""
    run_reporting_errors(parser, lambda: check_output_dir(path, flag))
    if overwrite or resume:
        return
    entries = existing_outputs(path)
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        choices = ("--resume to continue that training, --overwrite to replace it"
                   if resume is not None else "--overwrite to replace them")
        parser.error(f"{flag} {path} already holds earlier outputs ({shown}); pass "
                     f"{choices}, or choose another {flag}")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``, else a one-line error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def add_execution_flags(parser: argparse.ArgumentParser, *, inference: bool) -> None:
    """--accelerator, --num-workers, --quiet and the legacy --device."""
    parser.add_argument(
        "--accelerator",
        choices=ACCELERATORS,
        default=None,
        help="Hardware accelerator: auto (detect, default), cpu, gpu, cuda (alias for gpu), "
        "tpu, or mps (Apple Silicon).",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda", "gpu"),
        default=None,
        help="DEPRECATED: use --accelerator (cpu -> cpu, cuda -> gpu). --accelerator wins.",
    )
    parser.add_argument(
        "--num-workers",
        dest="num_workers",
        type=non_negative_int,
        default=0,
        help="DataLoader worker processes (default: 0 = load in the main process, safest "
        "for reproducibility). More workers use more memory.",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="Suppress progress bars and per-epoch console output.",
    )


def resolve_accelerator(args: argparse.Namespace) -> str:
    """--accelerator wins; legacy --device maps cpu -> cpu, cuda/gpu -> gpu with a
    DeprecationWarning."""
    if args.device is not None:
        if args.accelerator is not None:
            warnings.warn(
                "--device is deprecated; --accelerator is given, so --device "
                f"{args.device} is ignored.",
                DeprecationWarning,
                stacklevel=2,
            )
        else:
            warnings.warn(
                "--device is deprecated; use --accelerator "
                f"{'cpu' if args.device == 'cpu' else 'gpu'}.",
                DeprecationWarning,
                stacklevel=2,
            )
            return "cpu" if args.device == "cpu" else "gpu"
    return args.accelerator or "auto"


def show_deprecation_warnings() -> None:
    """Python hides DeprecationWarning outside __main__ by default; command-line users
    must see ours."""
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"ptychopinn.*")
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


# Config fields whose command-line dest has another name.
_FIELD_DESTS = {"n_groups": "n_images", "nepochs": "max_epochs", "test_data_file": "test_data"}


def _flag_for_field(parser: argparse.ArgumentParser, message: str) -> str | None:
    """The flag that sets the config field a ConfigError message names, if any."""
    match = re.match(r"\w+\.(\w+)=", message)
    if match is None:
        return None
    field = match.group(1)
    for action in parser._actions:
        if action.option_strings and action.dest in (field, _FIELD_DESTS.get(field)):
            return action.option_strings[0]
    return None


def error_naming_flag(parser: argparse.ArgumentParser, message: str) -> NoReturn:
    """Exit 2 with one line; a message about a config field is prefixed with the flag
    that sets it (users type flags, not config field names)."""
    flag = _flag_for_field(parser, message)
    parser.error(f"argument {flag}: {message}" if flag else message)


def build_or_exit(parser: argparse.ArgumentParser, factory: Callable[[], Any]) -> Any:
    """Run a config factory; a ConfigError becomes exit code 2 with one line."""
    try:
        return factory()
    except ConfigError as exc:
        error_naming_flag(parser, str(exc))


class _CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (a handler bound
    to the stream of its creation would write to a stale stream once the command line
    runs again in the same process with stderr redirected)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_console_logging(quiet: bool) -> None:
    """Our log lines on stderr (warnings only when quiet). Lightning keeps its own handler;
    a root handler here would print each of its lines twice."""
    level = logging.WARNING if quiet else logging.INFO
    for name in ("ptychopinn", "ptychopinn_torch"):
        log = logging.getLogger(name)
        log.setLevel(level)
        if not any(getattr(h, "_ptychopinn_cli", False) for h in log.handlers):
            handler = _CurrentStderrHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler._ptychopinn_cli = True  # type: ignore[attr-defined]
            log.addHandler(handler)
    if quiet:
        # Lightning resets its package logger to INFO when it is imported, which now
        # happens after this (parse first, import torch later); its banners come from
        # these child loggers, whose levels it leaves alone.
        for name in ("lightning", "lightning.pytorch", "lightning.pytorch.utilities.rank_zero",
                     "lightning.fabric.utilities.rank_zero"):
            logging.getLogger(name).setLevel(logging.WARNING)
