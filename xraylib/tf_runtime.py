"""TensorFlow, imported once and quietly: every ``tf_*`` module gets ``tf`` from here.

TensorFlow 2.21 prints its C++ start-up notices before its logging is set up, so
``TF_CPP_MIN_LOG_LEVEL`` does not silence them, and two of its libraries print them,
so each appears twice: "All log messages before absl::InitializeLog() ...",
"oneDNN custom operations are on ..." (the oneDNN setting is recorded in
``reports/metrics/environment.json`` instead, :mod:`xraylib.numerics`) and, on a
machine without a GPU, "Could not find cuda drivers" and "failed call to cuInit".
The import (and the device discovery that prints the last one) runs with the
process's standard error (file descriptor 2, where C++ writes) sent to a temporary
file; the notices above are dropped, every other line is written back to standard
error unchanged, so real errors still show.
"""

from __future__ import annotations

import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NOTICES = ("All log messages before absl::InitializeLog()", "oneDNN custom operations are on",
           "Could not find cuda drivers on your machine")
NO_GPU_NOTICES = ("failed call to cuInit",)  # dropped only where the machine has no NVIDIA device


def _is_notice(line: str, has_gpu: bool) -> bool:
    return any(n in line for n in NOTICES) or (not has_gpu and any(n in line for n in NO_GPU_NOTICES))


def kept_lines(text: str, has_gpu: bool) -> list[str]:
    """The lines of TensorFlow's start-up output that are not the known notices (module docstring)."""
    return [line for line in text.splitlines() if line.strip() and not _is_notice(line, has_gpu)]


def _import_quietly():
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow

            tensorflow.config.list_physical_devices()  # device discovery prints its notice here, not at the first op
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    lines = kept_lines(text, has_gpu=os.path.exists("/dev/nvidiactl"))
    if lines:
        os.write(2, ("\n".join(lines) + "\n").encode())
    return tensorflow


tf = _import_quietly()
