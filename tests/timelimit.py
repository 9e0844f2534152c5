"""A time limit for every test, which says where a test that hung was waiting.

A test that hangs must fail on its own, not stall the whole run until the CI's limit ends
it with no word of where it stood.  An asyncio test that hangs sits in the event loop's
``select``, so the Python traceback of the main thread says nothing: the report shows the
stack of every asyncio task instead (and of every thread).

At ``test_time_limit`` seconds (ini option, or ``IMAPJMAP_TEST_TIME_LIMIT``; 0 turns it
off) a SIGALRM fails the test with those stacks in its report.  If its teardown then
hangs too, a second alarm ``_TEARDOWN_GRACE`` seconds later prints the stacks again and ends
the pytest process: the run fails, but it ends, and says why.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from types import FrameType

import pytest

_DEFAULT_LIMIT = 420
_TEARDOWN_GRACE = 60


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "test_time_limit",
        "seconds a test (setup, call and teardown) may take before it fails; 0: no limit",
        default=str(_DEFAULT_LIMIT),
    )


def _limit(config: pytest.Config) -> int:
    raw = os.environ.get("IMAPJMAP_TEST_TIME_LIMIT") or str(config.getini("test_time_limit"))
    return max(0, int(raw))


def _stacks() -> str:
    """The stack of every task of the loop running in this thread, then of every thread."""
    out = io.StringIO()
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not None:
        for task in sorted(asyncio.all_tasks(loop), key=lambda t: t.get_name()):
            out.write(f"--- asyncio {task!r}\n")
            for frame in task.get_stack():
                out.write("".join(traceback.format_stack(frame, limit=1)))
    for ident, frame in sys._current_frames().items():
        out.write(f"--- thread {ident}\n")
        out.write("".join(traceback.format_stack(frame)))
    return out.getvalue()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    limit = _limit(item.config)
    if limit == 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def last_resort(signum: int, frame: FrameType | None) -> None:
        capture = item.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:
            capture.suspend_global_capture(in_=True)
        sys.stderr.write(
            f"\n{item.nodeid}: still running {_TEARDOWN_GRACE} s after its time limit"
            f" ({limit} s) failed it; ending the test run.\n{_stacks()}\n"
        )
        sys.stderr.flush()
        faulthandler.dump_traceback(all_threads=True)
        os._exit(3)

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGALRM, last_resort)
        signal.alarm(_TEARDOWN_GRACE)
        pytest.fail(f"ran longer than its time limit ({limit} s); where it waited:\n{_stacks()}")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(limit)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
