"""Training precision on this machine.

``precision=auto`` runs bf16 autocast only where the hardware has native bf16 kernels: a GPU that supports it,
or a CPU with AVX512 (oneDNN's bf16 path). On an AVX2-only CPU autocast emulates bf16: an IDM training step
took 2.3 s instead of 0.14-0.16 s in fp32 (``eva-bench-idm``, two AMD EPYC cores, two runs), an SFT step of the
tiny world model 12.9 s instead of 1.18 s (``eva-bench-wm``), so ``auto`` chooses fp32 there.
"""

from __future__ import annotations

import logging

import torch

from configs.constants import PRECISIONS

log = logging.getLogger(__name__)


def native_bf16(device_type: str) -> bool:
    """Whether bf16 autocast on ``device_type`` runs on native kernels rather than emulation."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a build without oneDNN
            return False
    return False


def resolve_precision(precision: str, device_type: str = "cpu") -> str:
    """``auto`` -> ``bf16`` or ``fp32`` by :func:`native_bf16`; an explicit choice is kept, with a warning when
    bf16 would be emulated."""
    if precision not in PRECISIONS:
        raise ValueError(f"config field 'precision': must be one of {PRECISIONS}, got '{precision}'")
    native = native_bf16(device_type)
    if precision == "auto":
        chosen = "bf16" if native else "fp32"
        log.info("precision=auto: %s on this %s (native bf16 kernels: %s)", chosen, device_type, native)
        return chosen
    if precision == "bf16" and not native:
        log.warning("precision=bf16 on a %s without native bf16 kernels: autocast emulates them and runs many times "
                    "slower than fp32 (configs/precision.py); precision=auto would choose fp32 here", device_type)
    return precision
