"""``server.workers``: the processes that serve one address beside the first.

The first ``imapjmap serve`` starts ``workers - 1`` more of itself (``serve --worker`` with
the same configuration file) before it listens; every one listens on ``server.listen``
with ``SO_REUSEPORT``, so the kernel spreads new connections over them and each runs on a
core of its own.  They are instances sharing one cache, coordinated like any others
(``cluster.url``, :mod:`imapjmap.cluster`).

Rule 1: the workers end with the first process: it sends them SIGTERM when it stops, and
        the kernel sends them SIGTERM if it dies (``PR_SET_PDEATHSIG``), so none is left
        serving alone.
Rule 2: a worker that dies is not restarted: its connections fail and the others serve
        the clients' next ones (the log says so when the first process stops).
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
from typing import Final

log = logging.getLogger(__name__)

STOP_TIMEOUT: Final = 10.0  # seconds a worker has to stop after SIGTERM
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        pass  # not Linux: Rule 1 then holds for a stop, not for a crash


def start(config_path: str, count: int) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` workers serving ``config_path``'s configuration."""
    started = []
    for _ in range(max(count, 0)):
        started.append(
            subprocess.Popen(
                [sys.executable, "-m", "imapjmap", "serve", "--config", config_path, "--worker"],
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # safe here: no thread runs yet in this process
            )
        )
    if started:
        log.info("started %d worker processes: %s", len(started), [p.pid for p in started])
    return started


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every worker still running and wait for it (SIGKILL past STOP_TIMEOUT)."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        else:
            log.warning("worker %d had exited with status %d", worker.pid, worker.returncode)
    for worker in workers:
        try:
            worker.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop within %.0f s: killed", worker.pid, STOP_TIMEOUT)
            worker.kill()
            worker.wait()
