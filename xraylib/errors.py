"""How a command reports a failure: one line, a traceback only when asked for.

Every entry point (``xraylib ...``, ``python -m xraylib.torch_train``, the notebook
stages) runs through :func:`run_command`. An input mistake (a bad parameter, a
missing or unreadable file, a wrong model file) is a ``ValueError``,
``FileNotFoundError``, ``KeyError`` or other ``OSError`` carrying a message written
for the user: it is printed as ``<command>: error: <message>`` and the exit status
is 2. Anything else is a bug or an environment problem: one line naming the
exception, exit status 1, and the hint to re-run with ``--debug`` (or with
``XRAYLIB_DEBUG=1`` in the environment, e.g. under ``dvc repro``) for the traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

DEBUG_ENV = "XRAYLIB_DEBUG"
INPUT_ERRORS = (ValueError, KeyError, OSError)  # FileNotFoundError, PermissionError, IsADirectoryError are OSErrors
EXIT_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED = 2, 1, 130


class StageError(Exception):
    """A pipeline stage failed; the message already says where and why (one line).

    ``input_error`` tells whether the cause was the user's input (exit status 2) or
    not (exit status 1).
    """

    def __init__(self, message: str, *, input_error: bool = True):
        super().__init__(message)
        self.input_error = input_error


def debug_requested(flag: bool = False) -> bool:
    """``--debug`` given, or ``XRAYLIB_DEBUG`` set to anything but ``0``/empty."""
    return bool(flag) or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def one_line(err: BaseException) -> str:
    """The message of ``err`` on one line (a ``KeyError`` without its quotes).

    An exception whose class sets ``multiline = True`` keeps its lines: a header and
    one line per problem, as :class:`xraylib.schema.ParamsError` lists them.
    """
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if isinstance(err, OSError) and err.filename and err.strerror:  # raised by the OS, not by xraylib
        text = f"{err.strerror}: '{err.filename}'"
    if getattr(err, "multiline", False):  # a list of problems, one per line (schema.ParamsError)
        return text.rstrip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return "; ".join(lines) or type(err).__name__


def _warning_line(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001 - warnings API
    return f"warning: {message}\n"


def run_command(func: Callable[[], int], command: str, *, debug: bool = False) -> int:
    """Run ``func`` and turn any exception into one line on stderr and an exit status.

    With ``debug`` (or ``XRAYLIB_DEBUG=1``) exceptions propagate with their traceback
    and warnings keep Python's format (file and line).
    """
    if debug_requested(debug):
        return func()
    python_format, warnings.formatwarning = warnings.formatwarning, _warning_line  # `warning: <message>`
    try:
        return func()
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except StageError as err:
        print(f"{command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_INPUT if err.input_error else EXIT_FAILURE
    except INPUT_ERRORS as err:
        print(f"{command}: error: {one_line(err)}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as err:  # noqa: BLE001 - the point: no traceback reaches the user unless asked for
        print(f"{command}: error: unexpected {type(err).__name__}: {one_line(err)} "
              f"(re-run with --debug, or {DEBUG_ENV}=1, for the traceback)", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        warnings.formatwarning = python_format
