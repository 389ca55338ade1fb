"""Facts about the worker's processor that change how methods quantize and what a measurement records."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# the instruction sets that decide what int8 and low-precision kernels can do, as /proc/cpuinfo names them
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line for line in f if line.startswith("flags")), "").split(":", 1)[-1].split())
    except OSError:
        return set()


def cpu_features() -> list[str]:
    """Which of FEATURES this CPU has, read at run time (machines of one kind differ)."""
    flags = _flags()
    return [f for f in FEATURES if f in flags]


def cpu_has_vnni() -> bool:
    """AVX512-VNNI / AVX-VNNI give u8xs8 int8 dot products without saturation; plain AVX2 does not."""
    flags = _flags()
    return "avx512_vnni" in flags or "avx_vnni" in flags


def cpu_has_amx() -> bool:
    """AMX tiles multiply int8 (and bf16) matrices several times faster than VNNI."""
    return "amx_int8" in _flags()


def openvino_precision() -> str:
    """What OpenVINO's CPU plugin computes float layers in by default here: bf16 where the CPU has bf16
    instructions (AVX512-BF16, AMX), else f32."""
    try:
        import openvino as ov

        hint = ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT")
        # an ov.Type in recent releases (its str is "<Type: 'bf16'>"), a string in older ones
        name = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        return name.replace("bfloat16", "bf16")
    except Exception:
        return "f32"
