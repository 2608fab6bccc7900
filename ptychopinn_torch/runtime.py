"""How the network runs: threads, memory format, precision, compilation, batch size.

The ``ExecutionConfig`` speed knobs (``specs/configuration.md``) are applied here, so that
training and inference treat them alike:

* ``num_threads``: torch's intra-op thread count, set for the duration of a run and put
  back afterwards (torch's setting is process-wide and a host application may rely on
  its own);
* ``channels_last``: convolution weights in NHWC layout; PyTorch then computes every
  convolution of the network channels-last (oneDNN on CPUs, cuDNN on GPUs);
* ``inference_precision``: bfloat16 autocast around the network ("bf16"), float32 ("32"),
  or "auto": bf16 where the hardware computes bfloat16 natively
  (:func:`native_bf16`), else float32. The network's image then changes by less than
  0.001 SSIM on the benchmark scans (``benchmarks/speed.py --precision-check``), and
  physics refinement, which follows it, always runs in float32;
* ``inference_compile``: ``torch.compile`` of the generator, with a clean fallback to
  eager execution when compiling fails (no C++ compiler, an unsupported operator);
* the default inference batch: measured best per device (:func:`default_inference_batch`).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from ptychopinn.config import ExecutionConfig

__all__ = [
    "CPU_BATCH_PIXELS",
    "DEVICE_DATA_SHARE",
    "GPU_BATCH_PIXELS",
    "NetworkRunner",
    "autocast",
    "default_inference_batch",
    "fits_on_device",
    "native_bf16",
    "resolve_precision",
    "torch_threads",
]

logger = logging.getLogger(__name__)

#: Detector pixels per inference batch on a CPU (patterns x N x N): 16 patterns at N = 64.
#: Measured (benchmarks/speed.py, 2-core AMD EPYC, float32 and bf16, N = 64 and 128):
#: throughput peaks near 16 x 64**2 and falls by 10-25 % at 4x more, as the
#: activations leave the caches.
CPU_BATCH_PIXELS = 16 * 64 * 64
#: The same on GPUs: 256 patterns at N = 64 fill a GPU without bounding its memory
#: (benchmarks/gpu_check.py measures the batch sizes around it).
GPU_BATCH_PIXELS = 256 * 64 * 64


#: Share of an accelerator's free memory that data may take to be kept on it (training
#: groups, measured counts in refinement) instead of being copied there batch by batch.
DEVICE_DATA_SHARE = 0.5


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of data should live on ``device``: only CUDA devices, and only
    within :data:`DEVICE_DATA_SHARE` of their free memory (on the CPU the data already
    are where the arithmetic is)."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_DATA_SHARE * free


@contextlib.contextmanager
def torch_threads(num_threads: int | None) -> Iterator[int]:
    """Run the block with ``num_threads`` intra-op threads (None: torch's current
    setting) and restore the previous count afterwards; yields the count in use."""
    previous = torch.get_num_threads()
    if num_threads is not None and num_threads != previous:
        torch.set_num_threads(num_threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The autocast context of an inference precision ("32": none, "bf16": bfloat16)."""
    if precision == "32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"inference precision must be '32' or 'bf16'; got {precision!r}")
    if not torch.amp.is_autocast_available(device.type):
        raise RuntimeError(f"bf16 autocast is not available on {device.type}; use "
                           "inference_precision='32'")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


#: CPU flags (Linux /proc/cpuinfo) of instructions that compute bfloat16 natively.
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: Environment variable that overrides the detection of :func:`native_bf16` ("1": native,
#: "0": not), for hardware it misjudges and for runs that must not depend on the machine.
NATIVE_BF16_ENV = "PTYCHOPINN_NATIVE_BF16"


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively, so that bf16 inference is faster
    than float32 there: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (read from /proc/cpuinfo; False where that file is absent). Without such
    instructions bfloat16 is emulated and slower than float32. The environment variable
    :data:`NATIVE_BF16_ENV` ("0" or "1") overrides the detection."""
    override = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if override in ("0", "1"):
        return override == "1"
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision ("32" or "bf16") that ``inference_precision`` means on ``device``."""
    if precision != "auto":
        return precision
    return "bf16" if native_bf16(device) else "32"


def default_inference_batch(device: torch.device, N: int, C: int) -> int:  # noqa: N803
    """Groups per inference batch when ``ExecutionConfig.inference_batch_size`` is None:
    :data:`CPU_BATCH_PIXELS` (CPU) or :data:`GPU_BATCH_PIXELS` (other devices) worth
    of patterns, at least one group."""
    pixels = CPU_BATCH_PIXELS if device.type == "cpu" else GPU_BATCH_PIXELS
    return max(1, pixels // (N * N * C))


def channels_last(module: nn.Module, enabled: bool) -> nn.Module:
    """``module`` with its 4-D weights in channels-last (``enabled``) or contiguous layout,
    changed in place (values unchanged)."""
    fmt = torch.channels_last if enabled else torch.contiguous_format
    return module.to(memory_format=fmt)


def is_channels_last(module: nn.Module) -> bool:
    """Whether every convolution weight of ``module`` is stored channels-last."""
    weights = [m.weight for m in module.modules() if isinstance(m, nn.Conv2d)]
    return bool(weights) and all(
        w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
        for w in weights)


class NetworkRunner:
    """Runs a module's ``predict_patches`` for inference, as the execution config says.

    ``runner(x, offsets)`` is ``module.predict_patches(x, offsets)`` under the configured
    precision, memory format and (optionally) compilation. With compilation, a short
    last batch is padded to ``batch_groups`` so that one compiled graph serves every
    batch; if compiling or running the compiled network fails, a warning names the
    reason and the runner continues eagerly (:attr:`compiled` becomes False).
    """

    def __init__(self, module: Any, device: torch.device, execution: ExecutionConfig,
                 batch_groups: int,
                 compiler: Callable[..., Callable[..., Any]] | None = None) -> None:
        self.module = module.to(device).eval()
        self.device = device
        self.precision = resolve_precision(execution.inference_precision, device)
        self.batch_groups = int(batch_groups)
        generator = getattr(self.module, "generator", None)
        if isinstance(generator, nn.Module):
            channels_last(generator, execution.channels_last)
        self.channels_last = execution.channels_last
        self.compile_error: str | None = None
        self._predict: Callable[[Tensor, Tensor], Tensor] = self.module.predict_patches
        self.compiled = False
        if execution.inference_compile:
            try:
                self._predict = (compiler or torch.compile)(self.module.predict_patches,
                                                            dynamic=False)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001 - any failure means: run eagerly
                self._fall_back(exc)
        autocast(device, self.precision)  # unsupported precision/device: fail before work

    def _fall_back(self, exc: BaseException) -> None:
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
        logger.warning("torch.compile of the network failed (%s); running it uncompiled",
                       reason)
        self.compile_error = reason
        self._predict = self.module.predict_patches
        self.compiled = False

    def _run(self, x: Tensor, offsets: Tensor) -> Tensor:
        if not self.compiled:
            return self._predict(x, offsets)
        short = self.batch_groups - x.shape[0]
        if short > 0:  # one graph for every batch: pad the last one
            x = torch.cat([x, x.new_zeros((short, *x.shape[1:]))])
            offsets = torch.cat([offsets, offsets.new_zeros((short, *offsets.shape[1:]))])
        try:
            out = self._predict(x, offsets)
        except Exception as exc:  # noqa: BLE001 - compile errors surface at the first call
            self._fall_back(exc)
            out = self._predict(x, offsets)
        return out[: out.shape[0] - max(short, 0)]

    @torch.inference_mode()
    def __call__(self, x: Tensor, local_offsets_px: Tensor) -> Tensor:
        """Complex object patches (B, C, N, N) for normalised amplitudes (B, C, N, N)."""
        with autocast(self.device, self.precision):
            return self._run(x, local_offsets_px)

    def record(self) -> dict[str, Any]:
        """How the network ran (for metrics.json and the benchmarks)."""
        return {
            "device": str(self.device),
            "threads": torch.get_num_threads(),
            "batch_groups": self.batch_groups,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            **({"compile_error": self.compile_error} if self.compile_error else {}),
        }
