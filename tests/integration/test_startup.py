"""Start-up as an operator sees it: nothing says "ready" before the address is listened on."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dovecot  # the demo starts a Dovecot of its own

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_on_a_busy_port_fails_before_its_ready_banner() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "imapjmap", "demo", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            env=env,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "(ready in" not in output
    assert "JMAP session URL" not in output
    assert "listening" not in output
    assert "Traceback" not in output
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, output
    assert f"cannot listen on 127.0.0.1:{port}: " in errors[0]
