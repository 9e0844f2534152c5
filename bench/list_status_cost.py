"""What the push watcher's LIST-STATUS comparison costs Cyrus (servers without NOTIFY).

Run by hand (well under a minute)::

    python3 bench/list_status_cost.py [--mailboxes 50] [--messages 20] [--rounds 200]

It starts a private Cyrus, gives one user ``--mailboxes`` mailboxes besides INBOX with
``--messages`` messages each, then sends, ``--rounds`` times on one plain IMAP connection
(``imaplib``), the command the watcher sends every ``push.status_interval`` seconds:
``LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN STATUS (MESSAGES UIDNEXT UIDVALIDITY
UNSEEN HIGHESTMODSEQ) MYRIGHTS)``.  It prints the median and p95 round trip, and the CPU
time Cyrus's processes (master's process group) spent per command, from ``/proc``; and the
same for a plain ``LIST "" "*"``, for scale.
"""

from __future__ import annotations

import argparse
import imaplib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)

from devservers.cyrus import CyrusServer

USERNAME: Final = "statusbench"
PASSWORD: Final = "bench-password"
COMMAND: Final = (
    'LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED CHILDREN'
    " STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ) MYRIGHTS)"
)


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in the process group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid:  # fields[2] is pgrp (the 5th field of stat)
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


RUNS: Final = (("LIST-STATUS (the watcher's)", COMMAND), ("plain LIST, for scale", 'LIST "" "*"'))


def measure(
    client: imaplib.IMAP4, pgid: int, command: str, rounds: int
) -> tuple[list[float], float]:
    """Round trips of ``command`` and the CPU seconds Cyrus spent on all of them."""
    times: list[float] = []
    cpu_before = group_cpu_seconds(pgid)
    for _ in range(rounds):
        client.untagged_responses.clear()  # imaplib keeps every line otherwise
        started = time.perf_counter()
        typ, data = client._simple_command(*command.split(" ", 1))
        times.append(time.perf_counter() - started)
        assert typ == "OK", data
    return times, group_cpu_seconds(pgid) - cpu_before


def message(n: int) -> bytes:
    return (
        f"From: Bench <bench@example.org>\r\nTo: {USERNAME}@example.org\r\n"
        f"Subject: sample {n}\r\nDate: Mon, 2 Jun 2025 10:00:00 +0000\r\n\r\nbody {n}\r\n"
    ).encode()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--mailboxes", type=int, default=50)
    parser.add_argument("--messages", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imapjmap-bench-cyrus-") as tmp:
        os.chmod(tmp, 0o755)  # Cyrus's processes run as another user
        server = CyrusServer.start(Path(tmp))
        try:
            server.add_user(USERNAME, PASSWORD)
            client = imaplib.IMAP4(server.host, server.port)
            client.login(USERNAME, PASSWORD)
            for box in range(args.mailboxes):
                name = f"Folder{box:03d}"
                assert client.create(name)[0] == "OK"
                for n in range(args.messages):
                    assert client.append(name, "", None, message(n))[0] == "OK"
            assert server._process is not None
            pgid = os.getpgid(server._process.pid)
            results = {label: measure(client, pgid, text, args.rounds) for label, text in RUNS}
            client.logout()
        finally:
            server.stop()
    print(f"{args.mailboxes + 1} mailboxes, {args.messages} messages each; {args.rounds} rounds")
    for label, (times, cpu) in results.items():
        times.sort()
        p95 = times[max(0, round(0.95 * len(times)) - 1)]
        print(
            f"{label}: round trip median {statistics.median(times) * 1000:.2f} ms,"
            f" p95 {p95 * 1000:.2f} ms; Cyrus CPU {cpu / args.rounds * 1000:.2f} ms per command"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
