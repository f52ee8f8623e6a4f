"""The numeric path of a run: thread counts, oneDNN, CPU and library versions.

Floating-point results of training depend on more than the code and the seed:
the CPU's instruction set (oneDNN and BLAS pick kernels per CPU), the number of
threads a sum is split over, and TensorFlow's oneDNN switch. On one machine with
fixed settings training is bit-for-bit repeatable; across machines it is not,
which is why the regression suite compares training figures within measured
tolerances (``tests/regression``).

``XRAYLIB_NUM_THREADS`` overrides the configured intra-op thread count of both
frameworks; the regression suite uses it (with ``TF_ENABLE_ONEDNN_OPTS=0``) to
run under a different numeric path than the one that recorded its reference.
:func:`describe` is written to ``reports/metrics/environment.json`` by every
training notebook, so each result says where it was made.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

THREADS_ENV = "XRAYLIB_NUM_THREADS"
_VERSIONS = ("numpy", "scipy", "scikit-learn", "pillow", "tensorflow", "keras", "torch", "torchvision")


def thread_count(configured: int) -> int:
    """Intra-op threads to use: ``$XRAYLIB_NUM_THREADS`` when set, else ``configured`` (0 = the framework's default).

    Raises:
        ValueError: the environment variable is not a non-negative integer.
    """
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return int(configured)
    if not value.isdigit():
        raise ValueError(f"{THREADS_ENV} must be a non-negative integer (0 = framework default), got {value!r}")
    return int(value)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags(wanted: tuple[str, ...] = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma")) -> list[str]:
    """Which of the instruction-set extensions that change kernel choice this CPU has."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [flag for flag in wanted if flag in have]
    except OSError:
        pass
    return []


def describe(extra: dict | None = None) -> dict:
    """Machine, thread settings and library versions of this process (for ``environment.json``)."""
    versions = {}
    for name in _VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "system": platform.system(),
        "python": sys.version.split()[0],
        "env": {key: os.environ.get(key) for key in (THREADS_ENV, "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS",
                                                     "OMP_NUM_THREADS",
                                                     "PYTHONHASHSEED", "CUDA_VISIBLE_DEVICES")},
        "versions": versions,
        **(extra or {}),
    }
