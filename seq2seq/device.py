"""Device choice and mixed precision, the same for training and translation."""

from __future__ import annotations

import contextlib
import platform

import torch

from .cpu_paths import cpu_has_native_bf16
from .errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Below this size a model gains nothing from bf16 on a CPU (measured: the 1.2M-parameter demo
# model trains no faster, with three times the memory); above it the products dominate.
BF16_MIN_PARAMETERS = 5_000_000


def resolve_precision(
    precision: str, device: torch.device, parameters: int, native_bf16=cpu_has_native_bf16
) -> tuple[str, str]:
    """The precision to run a model of `parameters` weights in, and why (printed at start).

    auto is bf16 where we measured it faster than fp32 (docs/performance.md, Precision): a CPU
    with native bf16 (AVX512-BF16, AMX) and a model of 5M parameters or more. Elsewhere fp32: a
    CPU without it emulates bf16 products, 80 times slower, and on a CUDA GPU our recurrent
    models trained slower under bf16 autocast (the casts cost more than the products save).
    An explicit bf16 on a CPU without native bf16 runs, with a warning; int8 (translation
    only, see int8.py) is never chosen by auto."""
    if precision not in ("auto", "fp32", "bf16", "fp16", "int8"):
        raise UserError(f"precision: expected auto, fp32, bf16, fp16 or int8, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA GPU; use bf16 on the CPU")
    if precision == "int8":
        check_int8(device)
        return "int8", "precision int8 (the decoder's weights in int8, dynamic activations)"
    if precision == "auto":
        if device.type != "cpu":
            return "fp32", "precision auto: fp32 (bf16 autocast was slower for our models on GPUs)"
        if not native_bf16():
            return "fp32", "precision auto: fp32 (this CPU has no native bf16)"
        if parameters < BF16_MIN_PARAMETERS:
            return "fp32", "precision auto: fp32 (a model this small gains nothing from bf16)"
        return "bf16", "precision auto: bf16 (this CPU multiplies bf16 natively)"
    if precision == "bf16" and device.type == "cpu" and not native_bf16():
        return "bf16", (
            "warning: precision bf16 on a CPU without native bf16 (AVX512-BF16 or AMX) is "
            "emulated and much slower than fp32; use auto or fp32"
        )
    return precision, f"precision {precision}"


def check_int8(device: torch.device) -> None:
    """int8 runs on x86 CPUs with AVX2 or later; say so anywhere else."""
    if device.type != "cpu":
        raise UserError("precision int8 runs on the CPU only; use fp32 or auto on a GPU")
    capability = torch.backends.cpu.get_cpu_capability()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if not x86 or capability not in ("AVX2", "AVX512"):
        raise UserError(
            f"precision int8: this CPU ({platform.machine()}, {capability}) has no int8 "
            "kernels here (needs x86-64 with AVX2 or later); use fp32"
        )


def resolve_device(name: str) -> torch.device:
    """auto: the GPU when there is one, else the CPU. Asking for a missing GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"device '{name}': expected auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{name}': no CUDA GPU is available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"device '{name}': only {torch.cuda.device_count()} GPU(s) here")
    return device


def autocast(device: torch.device, precision: str):
    """Autocast to bf16/fp16 for matrix work (weights stay fp32); a no-op for fp32 and int8
    (whose layers take float32 and do their own products)."""
    if precision in ("fp32", "int8"):  # `precision` as resolve_precision chose and checked it
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])
