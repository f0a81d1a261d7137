"""A function run in a forked child (`codegen.forked`), as the kernel library's helper is."""

import os
import signal
import sys
import threading
import time

import pytest

from codegen import forked

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the helper forks on Linux only")


def test_the_exit_status_says_whether_the_function_returned():
    assert forked.start(lambda _: None).wait() == 0
    assert forked.start(lambda _: 1 / 0).wait() == 1  # raised: no traceback, no return here
    assert forked.start(lambda _: sys.exit(5)).wait() == 1


def test_a_running_child_is_polled_waited_for_and_killed():
    child = forked.start(lambda _: time.sleep(30))
    assert child.poll() is None and child.wait(timeout=0.05) is None
    child.kill()
    assert child.wait() == -signal.SIGKILL and child.poll() == -signal.SIGKILL
    child.kill()  # once it has exited, nothing to do


def test_the_child_reads_what_this_process_writes_and_sees_the_end():
    def echo_length(handed):
        os._exit(len(handed.readline()) + 10 * len(handed.read()))

    child = forked.start(echo_length, with_input=True)
    child.stdin.write(b"abc\n")
    child.stdin.close()
    assert child.wait() == 4  # the line, then the end: its own copy of the write end is closed


def test_a_child_collected_elsewhere_counts_as_exited():
    child = forked.start(lambda _: None)
    os.waitpid(child.pid, 0)
    assert child.poll() == 0


def test_no_fork_beside_another_python_thread():
    assert forked.can_fork() == (threading.active_count() == 1)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not forked.can_fork()
    finally:
        stop.set()
        thread.join()
    assert forked.can_fork() == (threading.active_count() == 1)
