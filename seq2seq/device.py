"""Device choice and mixed precision, the same for training and translation."""

from __future__ import annotations

import contextlib
import functools

import torch

from .errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), as oneDNN sees it.
    Without it, PyTorch emulates bf16 products (80 times slower than fp32 on an AVX2 CPU)
    and oneDNN has no bf16 LSTM at all."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_device(name: str) -> torch.device:
    """auto: the GPU when there is one, else the CPU. Asking for a missing GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device '{name}': expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}': no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}': only {torch.cuda.device_count()} GPU(s) here")
    elif device.type != "cpu":
        raise UserError(f"device '{name}': expected auto, cpu, cuda or cuda:N")
    return device


def autocast(device: torch.device, precision: str):
    """Autocast to bf16/fp16 for matrix work (weights stay fp32); a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA GPU; use bf16 on the CPU")
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
