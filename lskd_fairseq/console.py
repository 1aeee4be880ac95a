"""lskd's one output convention.

* Library code logs through ``logging``, under ``lskd.*`` (``get_logger("teacher")`` is
  ``lskd.teacher``); under fairseq-train those lines join fairseq's log, elsewhere the
  command's ``logging`` set-up shows them.
* A command tells its user what it does through this module: ``say`` for progress (silent in
  quiet mode), ``result`` for what the user asked for (a score, a table, the file written;
  always shown), ``warn`` for a warning (stderr), ``error`` for the one line a mistake gets (``<prog>: error: ...`` on stderr),
  and ``progress_bar`` for a bar that appears only when progress is on and stderr is a terminal.

Commands call ``configure(quiet=..., progress=...)`` from their ``--quiet`` and
``--no-progress`` options. Pure Python: every layer uses it.
"""

import logging
import sys
import threading

__all__ = ["get_logger", "configure", "say", "result", "warn", "error", "progress_bar", "is_quiet"]

_state = {"quiet": False, "progress": True}
_lock = threading.Lock()  # lines of concurrent workers (the study's job slots) do not interleave


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("lskd") else "lskd." + name)


def configure(quiet: bool = False, progress: bool = True) -> None:
    _state["quiet"], _state["progress"] = bool(quiet), bool(progress)


def is_quiet() -> bool:
    return _state["quiet"]


def _write(stream, msg: str) -> None:
    with _lock:
        print(msg, file=stream, flush=True)


def say(msg: str) -> None:
    """A progress line on stdout (not in quiet mode)."""
    if not _state["quiet"]:
        _write(sys.stdout, msg)


def result(msg: str) -> None:
    """What the user asked for, on stdout, in every mode."""
    _write(sys.stdout, msg)


def warn(msg: str) -> None:
    """A warning line on stderr, in every mode (it names its command itself)."""
    _write(sys.stderr, msg)


def error(prog: str, msg: str) -> None:
    """The one line of a user's mistake, on stderr."""
    _write(sys.stderr, f"{prog}: error: {msg}")


def progress_bar(**kwargs):
    """A tqdm bar when progress is on and stderr is a terminal (tqdm installed), else None."""
    if not _state["progress"] or _state["quiet"] or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(file=sys.stderr, dynamic_ncols=True, mininterval=1.0, **kwargs)
