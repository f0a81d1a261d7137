"""A function run in a child forked from this process, behind the part of
`subprocess.Popen`'s interface that the kernel library's helpers use.

A helper started as a new interpreter spends its first tenth of a second or more loading
Python, llvmlite (LLVM itself: a shared library of some 100 MB, with thousands of static
initialisers) and this package, all of which this process has already done. A child forked
from here starts with all of it in place, a few milliseconds after it is asked for, and
its pages are shared with this process until either writes to them.

Forking is only safe where the child can never wait for a lock that another thread held
at the fork, which the child does not have. `can_fork` allows it on Linux while this
process runs no Python thread but the caller's: every call into LLVM (and so every lock
of LLVM's and of llvmlite's that the child may take) is made from a Python thread, and
the C library's allocator and stdio are prepared for fork. Threads that Python does not
know of belong to native libraries, which the child never calls: the BLAS that NumPy
links to (OpenBLAS stops its pool before a fork, through ``pthread_atfork``) and this
package's own worker, which takes no lock.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import BinaryIO

__all__ = ["ForkedProcess", "can_fork", "start"]


def can_fork() -> bool:
    """Whether `start` may fork this process now: on Linux, with no Python thread running
    but the caller's (see the module docstring).

    >>> can_fork() == (sys.platform.startswith("linux") and threading.active_count() == 1)
    True
    """
    return sys.platform.startswith("linux") and hasattr(os, "fork") and threading.active_count() == 1


class ForkedProcess:
    """A forked child, with the ``pid``, ``stdin``, ``returncode``, `poll`, `wait` and `kill`
    of `subprocess.Popen`. ``stdin`` is the pipe to the function's input (or None)."""

    def __init__(self, pid: int, stdin: BinaryIO | None):
        self.pid, self.stdin, self.returncode = pid, stdin, None
        self._lock = threading.Lock()  # one thread may poll while another waits or kills

    def poll(self) -> int | None:
        """The exit status if the child has exited (negative: the signal that ended it)."""
        return self._collect(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the child to exit, and return its exit status; with ``timeout``
        (seconds), return None if it is still running then."""
        if timeout is None:
            return self._collect(0)
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        return self.returncode

    def kill(self) -> None:
        """End the child with SIGKILL, if it is still running."""
        with self._lock:
            if self.returncode is None:
                os.kill(self.pid, signal.SIGKILL)

    def _collect(self, flags: int) -> int | None:
        with self._lock:
            if self.returncode is None:
                try:
                    pid, status = os.waitpid(self.pid, flags)
                except ChildProcessError:  # collected elsewhere (SIGCHLD ignored, os.wait):
                    pid, status = self.pid, 0  # its status is lost, as Popen takes it
                if pid == self.pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode


def start(target: Callable[[BinaryIO | None], None], with_input: bool = False) -> ForkedProcess:
    """Fork, and run ``target(input)`` in the child, which then exits: with status 0 if it
    returned, 1 if it raised. With ``with_input``, ``input`` is the read end of a pipe whose
    write end is the returned process's ``stdin``; otherwise None. The child's standard
    output and error go to the null device, and it never returns to the caller's frames, so
    it runs none of their ``finally`` blocks and none of this process's exit handlers.
    Call only where `can_fork`. Raises `OSError` if the system refuses a new process.

    >>> child = start(lambda input: None)
    >>> child.wait()
    0
    >>> child = start(lambda input: os._exit(3 if input.read() == b"go" else 4), with_input=True)
    >>> child.stdin.write(b"go"), child.stdin.close(), child.wait()
    (2, None, 3)
    """
    read_end, write_end = os.pipe() if with_input else (None, None)
    try:
        with warnings.catch_warnings():
            # Python 3.12 and later warn of any thread at all, native ones too (see the
            # module docstring for why those do not matter here).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:  # no memory or processes left for a child
        for fd in (read_end, write_end):
            if fd is not None:
                os.close(fd)
        raise
    if pid == 0:
        status = 1
        try:
            _detach(write_end)
            target(os.fdopen(read_end, "rb") if with_input else None)
            status = 0
        finally:
            os._exit(status)
    if read_end is not None:
        os.close(read_end)
    return ForkedProcess(pid, os.fdopen(write_end, "wb") if with_input else None)


def _detach(write_end: int | None) -> None:
    """Set the child up: its own end of the pipe closed (or it would never read its end),
    its output to the null device, and the objects it inherited out of the collector's reach
    (collecting would walk, and so copy, every page of them)."""
    if write_end is not None:
        os.close(write_end)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (1, 2):
        os.dup2(null, fd)
    os.close(null)
    gc.freeze()
