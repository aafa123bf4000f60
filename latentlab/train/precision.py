"""Training's precision: bf16 autocast where the hardware computes bf16 natively, fp32 elsewhere."""
from __future__ import annotations

import torch

from latentlab.settings import PRECISIONS

# bf16 autocast on a CPU only for images of at least this many pixels: smaller ones train slower in bf16
BF16_CPU_MIN_PIXELS = 16 * 16


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX); without them, torch's
    bf16 kernels emulate it and are slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def use_bf16(precision: str, device: torch.device, image_shape) -> bool:
    """Whether training runs its forward pass under bf16 autocast (weights, gradients and the
    optimizer stay fp32). "fp32" and "bf16" decide; "auto" picks bf16 on CUDA GPUs, and on CPUs
    with native bf16 for images of BF16_CPU_MIN_PIXELS or more; fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return True
    pixels = int(image_shape[-1]) * int(image_shape[-2])
    return device.type == "cpu" and pixels >= BF16_CPU_MIN_PIXELS and cpu_has_native_bf16()
