"""Keeps TensorFlow's and XLA's start-up chatter (cuInit on a CPU machine, absl banners) out of the terminal.

TensorFlow's C++ code logs through absl straight to file descriptor 2 before ``TF_CPP_MIN_LOG_LEVEL``
is read, so a CPU-only machine prints ``E0000 ... failed call to cuInit`` and similar lines that look
like failures. :func:`quiet_native_startup` routes descriptor 2 through a filter that drops only those
known lines (and absl's INFO lines); every other line, native errors and Python tracebacks included,
passes through unchanged and at once. ``PROTTRANS_JAX_NATIVE_LOGS=1`` turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from typing import Iterator

# Lines that say nothing is wrong. Anything else, including other E/F lines, is shown.
NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*"  # absl INFO lines from native code
    r"|[WE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] .*("
    r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory"
    r"|TF-TRT Warning|computation placer already registered|cuda_(platform|executor|diagnostics)"
    r"|Unable to initialize backend 'cuda'|An NVIDIA GPU may be present"
    r"|oneDNN supports DT_INT64 only on platforms with AVX-512))"  # a fallback, not a failure
)
# What the start of a noise line can look like before its end arrives ("W", "WARN", "E0000 00:00", ...).
_PREFIX = re.compile(r"^(W(A(R(N(I(N(G.*)?)?)?)?)?)?|[IWEF](\d{1,4}( .*)?)?)$", re.S)
_active = threading.local()


def is_noise(line: str) -> bool:
    """Whether one stderr line is known start-up chatter."""
    return bool(NOISE.match(line.rstrip("\r\n")))


class _Filter:
    """Copies bytes from a pipe to the real stderr, dropping noise lines; partial lines go through at once."""

    def __init__(self, read_fd: int, out_fd: int):
        self.read_fd, self.out_fd = read_fd, out_fd
        self.held = b""  # the start of a line that may still turn out to be noise
        self.passing = False  # inside a line already shown (a progress bar's update, say)

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self.read_fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self.feed(chunk)
        if self.held:
            self._write(self.held)

    def feed(self, chunk: bytes) -> None:
        data = self.held + chunk
        self.held = b""
        for piece in re.split(rb"(?<=[\r\n])", data):
            if not piece:
                continue
            complete = piece.endswith((b"\n", b"\r"))
            if self.passing:
                self._write(piece)
                self.passing = not complete
                continue
            text = piece.decode("utf-8", "replace")
            if complete:
                if not is_noise(text):
                    self._write(piece)
            elif _PREFIX.match(text.rstrip()):
                self.held = piece  # wait for the end of the line to decide
            else:
                self._write(piece)
                self.passing = True

    def _write(self, data: bytes) -> None:
        try:
            os.write(self.out_fd, data)
        except OSError:
            pass


@contextlib.contextmanager
def quiet_native_startup() -> Iterator[None]:
    """Filters file descriptor 2 (see the module docstring) for the duration of the block."""
    if getattr(_active, "on", False) or os.environ.get("PROTTRANS_JAX_NATIVE_LOGS") == "1":
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    read_fd, write_fd = os.pipe()
    worker = _Filter(read_fd, saved)
    thread = threading.Thread(target=worker.run, name="native-log-filter", daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _active.on = True
    try:
        yield
    finally:
        _active.on = False
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes our pipe end on descriptor 2: the filter sees EOF once children let go
        thread.join(timeout=2.0)
        if not thread.is_alive():  # else a child still holds the pipe: leave both open for the filter
            os.close(read_fd)
            os.close(saved)
