"""Flags and validation shared by the command lines (no torch: parsing stays fast).

A flag that sets a config field stores its value under ``"<section>.<field>"`` and has no
argparse default, so only flags actually given reach the configs: the defaults are the
config dataclasses' own (one place), a ``--config`` file fills in what it names, and
flags override both (:func:`resolve_values`). Every ``--flag`` also answers to its other
spelling (hyphens and underscores are interchangeable) and every execution flag also to
``--torch-<flag>`` (the seeds' aliases).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import signal
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from ptychopinn._io import check_output_dir, existing_outputs, launched_worker
from ptychopinn.config import ConfigError
from ptychopinn.config_file import SECTION_CLASSES, read_config_file, section_fields
from ptychopinn.errors import InputError, InputWarning, RuntimeFault

#: Config class name (as in ConfigError messages) -> section name.
_SECTION_OF_CLASS = {cls.__name__: name for name, cls in SECTION_CLASSES.items()}
TWIN_NOTE = ("Every flag also answers to its other spelling (hyphens and underscores are "
             "interchangeable: --max_epochs = --max-epochs)")
# argparse takes "-1e-3" for a flag (its own pattern knows only -1 and -1.5), so a
# negative value never reached the range check that explains it.
_NEGATIVE_NUMBER = re.compile(
    r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE
)


def _twins(option: str) -> list[str]:
    """The other spellings of a long option: all hyphens, all underscores."""
    if not option.startswith("--"):
        return []
    body = option[2:]
    return [s for s in (f"--{body.replace('_', '-')}", f"--{body.replace('-', '_')}")
            if s != option]


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's documented spellings once, followed by one metavar."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        hidden = getattr(action, "twin_spellings", set())
        names = ", ".join(s for s in action.option_strings if s not in hidden)
        if action.nargs == 0:
            return names
        return f"{names} {self._format_args(action, self._get_default_metavar_for_optional(action))}"


class CliArgumentParser(argparse.ArgumentParser):
    """argparse that exits 2 with one clear line for any invalid value, accepts both
    spellings of every long flag and no abbreviations (``--max`` is not ``--max_epochs``),
    and reads negative-looking numbers (``-1e-3``) as values, so range checks can speak."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_NUMBER

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        spellings = list(names)
        twins = set()
        for name in names:
            for twin in _twins(name):
                if twin not in spellings and twin not in self._option_string_actions:
                    spellings.append(twin)
                    twins.add(twin)
        action = super().add_argument(*spellings, **kwargs)
        action.twin_spellings = twins  # type: ignore[attr-defined]
        return action

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_reporting_errors(
    parser: argparse.ArgumentParser, work: Callable[[], Any],
    resolved: ResolvedValues | None = None,
) -> Any:
    """Run ``work``; an :class:`~ptychopinn.errors.InputError` exits 2 and a
    :class:`~ptychopinn.errors.RuntimeFault` exits 1, each with one line on stderr
    (``<prog>: error: <message>``) and no traceback."""
    try:
        return work()
    except InputError as exc:
        error_naming_flag(parser, _one_line(exc), resolved)
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
    if overwrite or resume or launched_worker():  # a DDP worker: its launcher checked
        return
    entries = existing_outputs(path)
    if entries:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        choices = ("--resume to continue that training, --overwrite to replace it"
                   if resume is not None else "--overwrite to replace them")
        parser.error(f"{flag} {path} already holds earlier outputs ({shown}); pass "
                     f"{choices}, or choose another {flag}")


# ----------------------------------------------------------------------------- types
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


def integer(text: str) -> int:
    """An argparse type: any integer (the config checks the range)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """An argparse type: a finite number (the config checks the range)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def positive_float(text: str) -> float:
    value = number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def text_value(text: str) -> str:
    return text


# ------------------------------------------------------------------ config-field flags
def field_default_text(section: str, name: str) -> str:
    """The dataclass default of ``section.name`` as help text shows it."""
    f = section_fields(section)[name]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if default is None:
        return "none"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _torch_alias(flags: Sequence[str]) -> str:
    return "--torch-" + flags[0][2:].replace("_", "-")


def add_field_flag(
    parser: argparse.ArgumentParser,
    *flags: str,
    section: str,
    name: str,
    help: str,
    default_text: str | None = None,
    **kwargs: Any,
) -> argparse.Action:
    """A flag that sets config field ``section.name``; its help states the dataclass
    default. Execution flags also answer to ``--torch-<flag>``."""
    if section == "execution":
        flags = (*flags, _torch_alias(flags))
    default_text = default_text or field_default_text(section, name)
    return parser.add_argument(
        *flags, dest=f"{section}.{name}", default=argparse.SUPPRESS,
        help=f"{help} (default: {default_text})", **kwargs,
    )


def add_switch(
    parser: argparse.ArgumentParser,
    on: Sequence[str],
    off: Sequence[str],
    *,
    section: str,
    name: str,
    help_on: str,
    help_off: str,
) -> None:
    """A pair of flags that set a boolean config field to True / False."""
    default = field_default_text(section, name) == "True"
    for flags, value, text in ((on, True, help_on), (off, False, help_off)):
        if section == "execution":
            flags = (*flags, _torch_alias(flags))
        parser.add_argument(
            *flags, dest=f"{section}.{name}", action="store_const", const=value,
            default=argparse.SUPPRESS,
            help=text + (" (default)" if default == value else ""),
        )


def add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """--config FILE and --backend."""
    parser.add_argument(
        "--config", type=Path, default=None, metavar="FILE",
        help="YAML or TOML file of config fields by their config names (specs/"
             "configuration.md); flags given here override it. Every run writes the "
             "configuration it used to <output_dir>/resolved_config.yaml, which this "
             f"flag accepts: {command} --config that_file repeats the run.",
    )
    section = "training" if command.endswith("train") else "inference"
    add_field_flag(
        parser, "--backend", section=section, name="backend", choices=("pytorch", "tensorflow"),
        help="Backend that runs the workflow; this distribution has only pytorch",
    )


def add_execution_flags(parser: argparse.ArgumentParser, *, inference: bool) -> None:
    """--accelerator, --num-workers, --quiet and the legacy --device."""
    accelerators = ("auto", "cpu", "gpu", "cuda", "mps") if inference else (
        "auto", "cpu", "gpu", "cuda", "tpu", "mps")
    add_field_flag(
        parser, "--accelerator", section="execution", name="accelerator", choices=accelerators,
        help="Hardware accelerator: auto (CUDA, else MPS, else CPU), cpu, gpu, cuda (alias "
        "for gpu), " + ("" if inference else "tpu, ") + "or mps (Apple Silicon)",
    )
    parser.add_argument(
        "--device", choices=("cpu", "cuda", "gpu"), default=None,
        help="DEPRECATED: use --accelerator (cpu -> cpu, cuda -> gpu). --accelerator wins.",
    )
    add_field_flag(
        parser, "--num-workers", section="execution", name="num_workers",
        type=non_negative_int, metavar="INT",
        help="DataLoader worker processes (0 = load in the main process, safest for "
        "reproducibility; more workers use more memory)",
    )
    add_field_flag(
        parser, "--num-threads", section="execution", name="num_threads",
        type=positive_int, metavar="INT", default_text="torch's default, one per core",
        help="Threads torch computes with (on a machine shared with other work, fewer "
        "threads than cores can be faster)",
    )
    add_switch(
        parser, ["--channels-last"], ["--no-channels-last"], section="execution",
        name="channels_last",
        help_on="Run the network's convolutions in channels-last (NHWC) memory format",
        help_off="Run them in the contiguous (NCHW) format",
    )
    add_field_flag(
        parser, "--mlflow-tracking-uri", section="execution", name="mlflow_tracking_uri",
        metavar="URI",
        help=("MLflow tracking URI the --run_id model is read from (none: MLflow's own "
              "default, the MLFLOW_TRACKING_URI environment variable or ./mlruns)")
        if inference else
        "MLflow tracking URI for --logger mlflow (none: a local store <output_dir>/mlruns)",
    )
    parser.add_argument(
        "--quiet", action="store_true",
        help=("No progress bar and no log lines; the written files are not listed either "
              "(errors are still printed)") if inference else
        "No progress bars, no per-epoch log lines (errors and the result are still printed)",
    )


# --------------------------------------------------------------- resolving the values
@dataclass
class ResolvedValues:
    """Config field values by section, and where each came from (for error messages)."""

    values: dict[str, dict[str, Any]]
    origins: dict[tuple[str, str], str] = field(default_factory=dict)

    def get(self, section: str, name: str, default: Any = None) -> Any:
        return self.values[section].get(name, default)

    def set(self, section: str, name: str, value: Any, origin: str) -> None:
        self.values[section][name] = value
        self.origins[(section, name)] = origin


def _option_of_dest(parser: argparse.ArgumentParser, dest: str) -> str | None:
    for action in parser._actions:
        if action.option_strings and action.dest == dest:
            return action.option_strings[0]
    return None


def resolve_values(
    parser: argparse.ArgumentParser, args: argparse.Namespace, sections: Iterable[str]
) -> ResolvedValues:
    """Config file values, then the flags given (flags win); ConfigError for a bad file.
    Legacy flags (--device, --disable_mlflow) are mapped here with a DeprecationWarning."""
    sections = tuple(sections)
    resolved = ResolvedValues({s: {} for s in sections})
    config_path = getattr(args, "config", None)
    if config_path is not None:
        for section, values in read_config_file(config_path, sections).items():
            for name, value in values.items():
                resolved.set(section, name, value, f"{config_path}: {name}")
    for dest, value in vars(args).items():
        section, dot, name = dest.partition(".")
        if dot and section in resolved.values:
            resolved.set(section, name, value, f"argument {_option_of_dest(parser, dest)}")
    if getattr(args, "device", None) is not None:
        if "accelerator" in resolved.values["execution"]:
            warnings.warn("--device is deprecated; --accelerator is given, so --device "
                          f"{args.device} is ignored.", DeprecationWarning, stacklevel=2)
        else:
            accelerator = "cpu" if args.device == "cpu" else "gpu"
            warnings.warn(f"--device is deprecated; use --accelerator {accelerator}.",
                          DeprecationWarning, stacklevel=2)
            resolved.set("execution", "accelerator", accelerator, "argument --device")
    if getattr(args, "disable_mlflow", False):
        warnings.warn("--disable_mlflow is deprecated; use --logger none (and --quiet).",
                      DeprecationWarning, stacklevel=2)
        resolved.set("execution", "logger", "none", "argument --disable_mlflow")
    if getattr(args, "quiet", False):
        resolved.set("execution", "enable_progress_bar", False, "argument --quiet")
    return resolved


def check_accelerator(parser: argparse.ArgumentParser, resolved: ResolvedValues,
                      accelerator: str, backend: str) -> None:
    """Exit 2 naming --accelerator (or where it was set) when this machine lacks it."""
    from ptychopinn import workflows

    problem = workflows.accelerator_problem_with_backend(accelerator, backend)
    if problem is not None:
        origin = resolved.origins.get(("execution", "accelerator"), "argument --accelerator")
        parser.error(f"{origin}: {problem}")


def parse_command_line(
    build_parser: Callable[[str], argparse.ArgumentParser], argv: Sequence[str] | None,
    prog: str, sections: Iterable[str],
) -> tuple[argparse.ArgumentParser, argparse.Namespace, ResolvedValues]:
    """Parse ``argv`` (exit 2 on a bad flag or config file), set up console logging and
    resolve the config values: the common start of the train and infer mains."""
    show_deprecation_warnings()
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    configure_console_logging(args.quiet)
    resolved = build_or_exit(parser, lambda: resolve_values(parser, args, sections))
    return parser, args, resolved


def require(parser: argparse.ArgumentParser, resolved: ResolvedValues,
            needed: Sequence[tuple[str, str, str]]) -> None:
    """Exit 2 naming the flags of required fields that neither a flag nor the file set."""
    missing = [flag for section, name, flag in needed
               if resolved.get(section, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


def show_deprecation_warnings() -> None:
    """Python hides DeprecationWarning outside __main__ by default; command-line users
    must see ours."""
    warnings.filterwarnings("default", category=DeprecationWarning, module=r"ptychopinn.*")
    warnings.filterwarnings("default", category=DeprecationWarning, module="__main__")


def _origin_for(parser: argparse.ArgumentParser, message: str,
                resolved: ResolvedValues | None) -> str | None:
    """Where the config field a ConfigError message names was set: the flag or the
    config-file key, else the flag that would set it."""
    match = re.search(r"(\w+Config)\.(\w+)=", message)
    if match is None:
        return None
    section = _SECTION_OF_CLASS.get(match.group(1))
    if section is None:
        return None
    name = match.group(2)
    if resolved is not None and (section, name) in resolved.origins:
        return resolved.origins[(section, name)]
    # Parsers that do not use "<section>.<field>" dests (the demo) name the field itself.
    option = _option_of_dest(parser, f"{section}.{name}") or _option_of_dest(parser, name)
    return f"argument {option}" if option else None


def error_naming_flag(parser: argparse.ArgumentParser, message: str,
                      resolved: ResolvedValues | None = None) -> NoReturn:
    """Exit 2 with one line; a message about a config field is prefixed with the flag
    (or config-file key) that set it: users type flags, not config field names."""
    origin = _origin_for(parser, message, resolved)
    parser.error(f"{origin}: {message}" if origin else message)


def build_or_exit(parser: argparse.ArgumentParser, factory: Callable[[], Any],
                  resolved: ResolvedValues | None = None) -> Any:
    """Run a config factory; a ConfigError becomes exit code 2 with one line."""
    try:
        return factory()
    except ConfigError as exc:
        error_naming_flag(parser, str(exc), resolved)


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
