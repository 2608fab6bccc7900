"""Which accelerators exist on this machine, and the torch device an accelerator name means."""

from __future__ import annotations

import importlib.util

import torch


def accelerator_unavailable(accelerator: str) -> str | None:
    """Why ``accelerator`` cannot run on this machine, or None if it can (checked before
    any data is loaded, so the user gets one line instead of a Lightning traceback)."""
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        return "CUDA is not available on this machine; use --accelerator cpu or auto"
    if accelerator == "mps" and not torch.backends.mps.is_available():
        return "MPS is not available on this machine; use --accelerator cpu or auto"
    if accelerator == "tpu" and importlib.util.find_spec("torch_xla") is None:
        return "TPU support needs the torch_xla package, which is not installed"
    return None


def select_device(accelerator: str) -> torch.device:
    """The torch device an accelerator name means; 'auto' picks CUDA, then MPS, then CPU."""
    if accelerator == "tpu":
        raise RuntimeError("inference on TPU is not supported; use cpu or gpu")
    problem = accelerator_unavailable(accelerator)
    if problem is not None:
        raise RuntimeError(problem)
    if accelerator in ("gpu", "cuda"):
        return torch.device("cuda")
    if accelerator == "mps":
        return torch.device("mps")
    if accelerator == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
    return torch.device("cpu")
