"""The IMAP FETCH reply parser alone: microseconds per realistic FETCH response.

Run by hand (about a minute with the defaults)::

    python3 bench/parse_fetch.py                      # the parser in this working tree
    python3 bench/parse_fetch.py --compare-rev HEAD~3  # and the one at a git revision, side by side

The responses are real: a private Dovecot is seeded with generated mail (``mailgen``, the mail
of ``bench/read_path.py``) and answers the first sync's ``UID FETCH 1:*`` of the proxy's items.
The reply is split into untagged responses the way the session hands them to
``parse_reply`` (line, literal, line, ...), by the session's framer
(:mod:`imapjmap.imap.framing`) fed 64 KiB at a time; its cost a response is printed too.
``--save FILE`` keeps the raw reply and ``--reply FILE`` reuses it without starting Dovecot.

Each sample is ``parse_reply`` over a batch of ``--batch`` responses (the proxy parses a
batch per command), divided by the batch size; the median of all samples is printed.  With
``--compare-rev`` the parser package of that revision (``imapjmap/imap`` without the session
and pool modules, plus ``imapjmap/errors.py``) is extracted from git under another package
name, the two parsers alternate batch by batch, and their results are checked to be equal.

``--rows`` measures what a first sync's parsing worker does instead: ``sync.parsing.
parse_batch``, the parse and the Email rows built from it, a message at a time of each batch.
It says which of the worker's modules run compiled (``imapjmap.compiled``); run it once as
is and once with ``IMAPJMAP_PURE=1`` to compare the compiled build with pure Python.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# what the proxy's first sync fetches (bench/read_path.py's RAW_ITEMS, spelled out here so
# that the bench runs without the proxy's HTTP side)
FETCH_ITEMS = (
    "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODYSTRUCTURE "
    "BODY.PEEK[HEADER.FIELDS (REFERENCES SENDER REPLY-TO)] MODSEQ X-GUID)"
)
PASSWORD = "bench-password"

Responses = list[tuple[bytes, ...]]
Parser = Callable[[Sequence[Sequence[bytes]], str, bytes], Any]


def say(text: str) -> None:
    print(text, flush=True)


# -- the responses -----------------------------------------------------------------------------


def capture(count: int) -> bytes:
    """Seed a private Dovecot with ``count`` messages and return its raw FETCH reply."""
    sys.path.insert(0, str(REPO / "bench"))
    import in_checkout  # noqa: F401  (puts devservers/, not installed, on the path)
    from mailgen import seed_inbox
    from read_path import RawImap

    from devservers.dovecot import DovecotServer, ensure_dovecot_installed

    ensure_dovecot_installed()
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-parse-bench-"))
    dovecot = DovecotServer.start(workdir / "dovecot")
    try:
        dovecot.add_user("bench", PASSWORD)
        stats = seed_inbox(dovecot, "bench", count)
        say(f"seeded {count:,} messages in {stats.seconds:.1f} s (mean {stats.mean_kb:.1f} KB)")
        client = RawImap(dovecot.host, dovecot.port)
        try:
            client.command(f'LOGIN "bench" "{PASSWORD}"')
            client.command("ENABLE CONDSTORE QRESYNC")
            client.command("EXAMINE INBOX")
            client.command(f"UID FETCH 1:* {FETCH_ITEMS}")  # fills Dovecot's cache
            started = time.perf_counter()
            reply = client.command(f"UID FETCH 1:* {FETCH_ITEMS}")
            elapsed = time.perf_counter() - started
        finally:
            client.close()
        per_message = elapsed / count * 1e6
        say(f"Dovecot answered the FETCH in {elapsed:.2f} s ({per_message:.0f} µs a message)")
        return bytes(reply)
    finally:
        dovecot.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def split_reply(data: bytes) -> tuple[Responses, float]:
    """The untagged responses of a raw reply as ``(line, literal, line, ...)`` without ``* ``,
    cut by the framer from 64 KiB reads (as the network delivers them), and the framer's
    CPU microseconds a response (the median of five passes)."""
    from imapjmap.imap.framing import Framer, Untagged

    data = data[data.find(b"* ") :]
    reads = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    passes: list[float] = []
    for _ in range(5):
        framer = Framer()
        started = time.thread_time()
        framed = [r for read in reads for r in framer.feed(read)]
        passes.append(time.thread_time() - started)
    responses = [r.chunks for r in framed if isinstance(r, Untagged)]
    return responses, statistics.median(passes) / len(responses) * 1e6


# -- the parser at another revision -------------------------------------------------------------


def parser_at(rev: str, workdir: Path) -> tuple[Parser, str]:
    """``parse_reply`` of the parser package at ``rev``, imported under another name."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    name = f"imapjmap_at_{sha}"
    listing = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", rev, "imapjmap/imap/"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    wanted = ["imapjmap/__init__.py", "imapjmap/errors.py"] + [
        path
        for path in listing
        if path.endswith(".py") and Path(path).name not in ("session.py", "pool.py")
    ]
    for path in wanted:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:{path}"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        target = workdir / name / Path(path).relative_to("imapjmap")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(re.sub(r"\bimapjmap\.", f"{name}.", source))
    sys.path.insert(0, str(workdir))
    module: ModuleType = importlib.import_module(f"{name}.imap.parse")
    parse: Parser = module.parse_reply
    return parse, sha


# -- measuring ---------------------------------------------------------------------------------


def batches(responses: Responses, size: int) -> list[Responses]:
    return [responses[i : i + size] for i in range(0, len(responses), size)]


def measure(
    parsers: dict[str, Parser], responses: Responses, batch: int, rounds: int
) -> dict[str, list[float]]:
    """Per-response microseconds of each batch, the parsers alternating batch by batch."""
    samples: dict[str, list[float]] = {label: [] for label in parsers}
    order = list(parsers.items())
    clock = time.thread_time  # CPU time: on a shared machine, waiting for a core is not ours
    for round_ in range(rounds):
        for group in batches(responses, batch):
            for label, parse in order if round_ % 2 == 0 else reversed(order):
                started = clock()
                parse(group, "OK", b"Fetch completed.")
                samples[label].append((clock() - started) / len(group) * 1e6)
    return samples


def check_equal(parsers: dict[str, Parser], responses: Responses) -> None:
    """Every parser must produce the same records (compared by repr: the classes differ)."""
    results = {label: repr(parse(responses, "OK", b"")) for label, parse in parsers.items()}
    first, *others = results
    for label in others:
        if results[label] != results[first]:
            raise SystemExit(f"the parsers disagree: {first} and {label}")


def measure_rows(responses: Responses, batch: int, rounds: int) -> list[float]:
    """Per-message CPU microseconds of ``parse_batch`` (a worker's call) over each batch."""
    from imapjmap.sync.parsing import parse_batch

    samples: list[float] = []
    for _ in range(rounds):
        for group in batches(responses, batch):
            uids = [int(r[0].split(b"UID ", 1)[1].split(b" ", 1)[0]) for r in group]
            started = time.thread_time()
            parse_batch(group, uids, "Abench", False)
            samples.append((time.thread_time() - started) / len(group) * 1e6)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="messages to seed (%(default)s)")
    parser.add_argument("--reply", type=Path, help="read a saved raw FETCH reply instead")
    parser.add_argument("--save", type=Path, help="save the raw FETCH reply to this file")
    parser.add_argument("--batch", type=int, default=100, help="responses a sample (%(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over all responses")
    parser.add_argument("--compare-rev", help="also measure the parser at this git revision")
    parser.add_argument(
        "--rows", action="store_true", help="measure a parsing worker's call (parse + rows)"
    )
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from imapjmap.imap.parse import parse_reply

    raw = args.reply.read_bytes() if args.reply else capture(args.messages)
    if args.save:
        args.save.write_bytes(raw)
    responses, framing = split_reply(raw)
    literals = sum(len(r) // 2 for r in responses)
    mean_line = statistics.fmean(sum(len(c) for c in r[::2]) for r in responses)
    say(
        f"{len(responses):,} FETCH responses, {len(raw) / 2**20:.1f} MB, {literals:,} literals, "
        f"mean line text {mean_line:.0f} bytes; Python {sys.version.split()[0]}"
    )
    say(f"framing (imap.framing, 64 KiB reads): {framing:.1f} µs a response")
    if args.rows:
        from imapjmap import compiled

        say(f"compiled modules: {compiled.describe()}")
        rows = measure_rows(responses, args.batch, args.rounds)
        quartiles = statistics.quantiles(rows, n=4)
        say(
            f"parse_batch (parse + rows)  median {statistics.median(rows):7.1f} µs a message "
            f"(quartiles {quartiles[0]:.1f} to {quartiles[2]:.1f}; {len(rows)} batches)"
        )
        return 0
    parsers: dict[str, Parser] = {"working tree": parse_reply}
    workdir = Path(tempfile.mkdtemp(prefix="imapjmap-parse-rev-"))
    try:
        if args.compare_rev:
            old, sha = parser_at(args.compare_rev, workdir)
            parsers = {f"{args.compare_rev} ({sha})": old, **parsers}
            check_equal(parsers, responses)
            say("both parsers produce the same records")
        samples = measure(parsers, responses, args.batch, args.rounds)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {label: statistics.median(values) for label, values in samples.items()}
    width = max(map(len, medians))
    for label, value in medians.items():
        quartiles = statistics.quantiles(samples[label], n=4)
        say(
            f"{label:<{width}}  median {value:7.1f} µs a response "
            f"(quartiles {quartiles[0]:.1f} to {quartiles[2]:.1f}; {len(samples[label])} batches)"
        )
    if len(medians) == 2:
        before, after = medians.values()
        say(f"speedup: {before / after:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
