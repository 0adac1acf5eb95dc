"""Quiet by default: TVM's C++ log lines and PyTorch's warnings raised inside byoc_torch's own
work go to Python ``logging`` (logger ``byoc_torch``, level DEBUG) instead of the terminal.

Place in the data flow: beside the pipeline. The entry points that run TVM's compiler or
loader, ``torch.export`` or TorchScript -- ``compile``, ``report``, ``export_program``,
``CompiledModule.export``, loading an artifact, the ``torch.compile`` backend -- run inside
:func:`captured` (as a decorator: :func:`quietly`); a call of a compiled model does not (no
cost on the hot path; TVM writes nothing there).

* **TVM's C++ log lines.** TVM 0.27 is built without ``TVM_LOG_CUSTOMIZE``: ``LOG(WARNING)``
  writes ``[HH:MM:SS] file.cc:LINE: Warning: ...`` straight to ``std::cerr`` (file descriptor
  2), with no level switch (``TVM_LOG_DEBUG`` only governs ``DLOG``/``VLOG``). So while any
  thread is inside :func:`captured`, descriptor 2 points at a temporary file; when the last
  thread leaves, it is restored and the file read back: each line in TVM's format is logged to
  ``byoc_torch.tvm`` at DEBUG, every other line (a print to ``sys.stderr`` from another thread,
  a log handler writing to stderr) is written to the restored stderr unchanged, so nothing is
  lost, only delayed to the end of the call. A crash inside the section loses its captured
  lines: run with ``BYOC_TORCH_LOG=raw`` to leave descriptor 2 alone.
* **Python warnings** (``torch.export``'s deprecation chatter, e.g. ``isinstance(treespec,
  LeafSpec) is deprecated`` from its own ``deepcopy``): while captured, ``warnings.showwarning``
  routes a warning raised in a capturing thread to ``byoc_torch.warnings`` at DEBUG, unless
  it is byoc_torch's own (its text starts with ``byoc_torch``: meant for the user, shown as
  before); other
  threads' warnings pass through untouched.

* **Python prints to ``sys.stderr``** by a capturing thread (``torch.export`` prints a partial
  FX graph before it raises) go to ``byoc_torch.stderr`` at DEBUG: ``sys.stderr`` is a
  thread-aware proxy while captured.
* **PyTorch's log records** below ERROR logged by a capturing thread to PyTorch's own
  handlers (``torch.*`` loggers; e.g. an FX graph printed before an export error) go to
  ``byoc_torch.torch`` at DEBUG.

The capture is reference-counted across threads under one lock (the descriptor and
``warnings.showwarning`` are process-wide), reentrant (nested entry points capture once) and
costs a temporary file and two ``dup2`` per outermost call.

``BYOC_TORCH_LOG`` (read at import, :func:`configure_from_env`): ``debug``/``info``/
``warning``/``error`` sets the ``byoc_torch`` logger's level and, if no handler is configured,
adds one writing to stderr; ``raw`` turns the descriptor capture off (TVM's lines then go to
stderr as TVM writes them).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = [
    "ENV",
    "OWN_WARNING_PREFIX",
    "TVM_LINE",
    "captured",
    "configure_from_env",
    "quietly",
    "relay",
]

ENV = "BYOC_TORCH_LOG"
#: A line TVM's ``LogMessage`` writes: ``[HH:MM:SS] file:LINE: [Debug: |Warning: |Error: ]text``.
TVM_LINE = re.compile(r"^\[\d{2}:\d{2}:\d{2}\] \S+:\d+: ")

tvm_logger = logging.getLogger("byoc_torch.tvm")
warnings_logger = logging.getLogger("byoc_torch.warnings")
torch_logger = logging.getLogger("byoc_torch.torch")
stderr_logger = logging.getLogger("byoc_torch.stderr")

#: byoc_torch's own warnings (for the user: shown, never routed to DEBUG) start with this.
OWN_WARNING_PREFIX = "byoc_torch"

_LOCK = threading.Lock()
_LOCAL = threading.local()
_active: _Capture | None = None
_users = 0
_raw = False

F = TypeVar("F", bound=Callable)


class _Capture:
    """Descriptor 2 redirected into a temporary file and ``warnings.showwarning`` hooked, for
    as long as some thread is inside :func:`captured`."""

    def __init__(self, redirect: bool) -> None:
        self.file = None
        self.saved_fd = -1
        if redirect:
            try:
                _flush_stderr()
                self.file = tempfile.TemporaryFile()
                self.saved_fd = os.dup(2)
                os.dup2(self.file.fileno(), 2)
            except OSError:  # no descriptor 2 (a daemon): nothing to capture
                self._close_file()
        self.previous_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning
        self.stderr = sys.stderr
        if self.stderr is not None:
            sys.stderr = _StderrProxy(self.stderr)
        _filter_torch_handlers()

    def close(self) -> None:
        if warnings.showwarning is _showwarning:
            warnings.showwarning = self.previous_showwarning
        if isinstance(sys.stderr, _StderrProxy) and sys.stderr.stream is self.stderr:
            sys.stderr = self.stderr
        if self.file is None:
            return
        _flush_stderr()
        os.dup2(self.saved_fd, 2)
        self.file.seek(0)
        data = self.file.read()
        self._close_file()
        relay(data.decode("utf-8", errors="replace"))

    def _close_file(self) -> None:
        if self.saved_fd >= 0:
            os.close(self.saved_fd)
            self.saved_fd = -1
        if self.file is not None:
            self.file.close()
            self.file = None


def _flush_stderr() -> None:
    stream = sys.stderr
    if stream is not None:
        try:
            stream.flush()
        except (OSError, ValueError):
            pass


def relay(text: str) -> None:
    """Route captured stderr text: TVM's log lines to ``byoc_torch.tvm`` at DEBUG, every other
    line back to ``sys.stderr`` as it was."""
    other: list[str] = []
    for line in text.splitlines(keepends=True):
        if TVM_LINE.match(line):
            tvm_logger.debug("%s", line.rstrip("\n"))
        else:
            other.append(line)
    if other and sys.stderr is not None:
        sys.stderr.write("".join(other))
        _flush_stderr()


def _raised_by_byoc_torch(message: Warning | str) -> bool:
    """Is this one of byoc_torch's own warnings (meant for the user)? They all start with
    ``byoc_torch``; a warning PyTorch's C++ raises while byoc_torch calls it does not."""
    return str(message).startswith(OWN_WARNING_PREFIX)


def _showwarning(message, category, filename, lineno, file=None, line=None) -> None:
    if getattr(_LOCAL, "depth", 0) > 0 and not _raised_by_byoc_torch(message):
        warnings_logger.debug("%s:%s: %s: %s", filename, lineno, category.__name__, message)
        return
    active = _active
    show = active.previous_showwarning if active is not None else warnings._showwarning_orig
    show(message, category, filename, lineno, file, line)


class _StderrProxy:
    """``sys.stderr`` while captured: what a capturing thread prints (e.g. ``torch.export``
    printing a partial FX graph before it raises) goes to ``byoc_torch.stderr`` at DEBUG, line
    by line; every other thread writes to the real stream."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        if getattr(_LOCAL, "depth", 0) == 0:
            return self.stream.write(text)
        pending = getattr(_LOCAL, "pending", "") + text
        *lines, _LOCAL.pending = pending.split("\n")
        for line in lines:
            if line.strip():
                stderr_logger.debug("%s", line)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        if name == "stream":  # not set yet (a copy made without __init__)
            raise AttributeError(name)
        return getattr(self.stream, name)


class _TorchRecords(logging.Filter):
    """On PyTorch's own log handlers: a record below ERROR logged by a capturing thread goes
    to ``byoc_torch.torch`` at DEBUG instead (e.g. ``symbolic_shapes``' "Unable to find user
    code" warning with a whole FX graph, before an export error that says it all)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno >= logging.ERROR
            or getattr(_LOCAL, "depth", 0) == 0
            or not (record.name == "torch" or record.name.startswith("torch."))
        ):
            return True  # a handler PyTorch shares with other loggers sees theirs unchanged
        if not getattr(record, "byoc_torch_routed", False):  # once, whatever the handlers
            record.byoc_torch_routed = True
            torch_logger.debug("%s: %s", record.name, record.getMessage())
        return False


_TORCH_FILTER = _TorchRecords()


def _filter_torch_handlers() -> None:
    """Put :data:`_TORCH_FILTER` on the handlers PyTorch attaches to its ``torch.*`` loggers
    (they do not propagate to the root); idempotent, it stays for the process (it lets every
    record of a thread outside :func:`captured` through)."""
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if (name == "torch" or name.startswith("torch.")) and isinstance(logger, logging.Logger):
            for handler in logger.handlers:
                if _TORCH_FILTER not in handler.filters:
                    handler.addFilter(_TORCH_FILTER)


@contextmanager
def captured() -> Iterator[None]:
    """Run the body with TVM's stderr lines and foreign Python warnings sent to logging (see
    the module doc); reentrant and thread-safe."""
    global _active, _users
    with _LOCK:
        if _users == 0:
            _active = _Capture(redirect=not _raw)
        _users += 1
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1
        pending = getattr(_LOCAL, "pending", "")
        if _LOCAL.depth == 0 and pending:
            _LOCAL.pending = ""
            if pending.strip():
                stderr_logger.debug("%s", pending)
        with _LOCK:
            _users -= 1
            if _users == 0:
                active, _active = _active, None
                active.close()


def quietly(fn: F) -> F:
    """``fn`` run inside :func:`captured`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with captured():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def configure_from_env(value: str | None = None) -> None:
    """Apply ``BYOC_TORCH_LOG`` (see the module doc); an unknown value is ignored with a
    warning, an empty one changes nothing."""
    global _raw
    value = (os.environ.get(ENV, "") if value is None else value).strip().lower()
    if not value:
        return
    if value == "raw":
        _raw = True
        value = "debug"
    level = logging.getLevelName(value.upper())
    if not isinstance(level, int):
        warnings.warn(
            f"{ENV}={value!r} is not one of debug, info, warning, error, raw; ignored",
            stacklevel=2,
        )
        return
    root = logging.getLogger("byoc_torch")
    root.setLevel(level)
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
