"""The ``imapjmap`` command: argv parsing, loading the config, logging setup.

Subcommands:

* ``imapjmap serve --config FILE``: run the proxy until SIGINT/SIGTERM
  (``imapjmap --config FILE`` without a subcommand does the same).
* ``imapjmap demo [--listen HOST:PORT] [--config FILE] [--log FILE]``: the self-contained
  demo, from a source checkout only (the throw-away servers it runs live in
  ``devservers/``, which is not installed); FILE's keys laid over the demo's configuration.
* ``imapjmap check-config FILE``: validate a file and print the effective configuration.
* ``imapjmap health --config FILE [--ready]``: ask the running proxy's ``/healthz`` (or
  ``/readyz``) at its configured listen address; exit 0 when it says so (a container's or
  a service manager's health check).
* ``imapjmap accounts --config FILE [--json]``: the accounts in the cache (read-only).
* ``imapjmap sync USER --config FILE [--password-file F]``: have the running proxy fill
  USER's cache, with a progress bar.
* ``imapjmap cache prune --config FILE [--unused-days N]`` and ``imapjmap cache reset
  --config FILE [USER]``: maintenance writes, refused while the proxy answers unless
  ``--force``.  These live in :mod:`imapjmap.admin`.

Exit status: 0 on success, 1 when ``health`` finds the proxy unhealthy or an admin command
fails or refuses, 2 for a usage or configuration error.  The HTTP front end, the admin
commands and the demo are imported only when their subcommand runs, so importing this
module loads no I/O library (each one has a single owner: tests/unit/test_layering.py).
They are imported with ``importlib.import_module`` and a literal name (which the layering
test follows), so this module type-checks on its own.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

from imapjmap import __version__, compiled, workers
from imapjmap.config import (
    Config,
    ServerConfig,
    config_warnings,
    load_config,
    split_listen,
    submission_warnings,
    to_toml,
)
from imapjmap.errors import ConfigError
from imapjmap.logsetup import setup_logging

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
HEALTH_TIMEOUT = 4.0  # seconds; /readyz answers within its own bounds (http/health.py)

# Where a source checkout keeps the demo: beside the package, not inside it, so that an
# installed wheel holds nothing that installs Debian packages or starts servers.
CHECKOUT = Path(__file__).resolve().parent.parent
NO_CHECKOUT = """\
imapjmap: the demo runs from a source checkout, not from an installed package: it starts
throw-away IMAP and SMTP servers (installing their Debian packages when missing) from the
checkout's devservers/ directory.  In a clone of the source repository, run ./scripts/run.
To serve your own IMAP server instead: imapjmap serve --config FILE"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        if args.config is None:
            parser.print_usage(sys.stderr)
            print("imapjmap: error: choose a command (or give --config to serve)", file=sys.stderr)
            return EXIT_USAGE
        args.command = "serve"
    return _COMMANDS[args.command](args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imapjmap", description="A JMAP server in front of any IMAP account."
    )
    parser.add_argument("--version", action="version", version=f"imapjmap {__version__}")
    parser.add_argument("--config", metavar="FILE", help="serve with this configuration file")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the proxy until SIGINT or SIGTERM")
    serve.add_argument("--config", metavar="FILE", required=True, help="TOML configuration file")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # workers.py
    demo = commands.add_parser("demo", help="run the self-contained demo")
    demo.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=_listen_arg,
        default=ServerConfig().listen,
        help="address of the demo's JMAP server (default: %(default)s)",
    )
    demo.add_argument(
        "--config", metavar="FILE", help="TOML laid over the demo's own configuration"
    )
    demo.add_argument("--log", metavar="FILE", help="also write the proxy's log to FILE")
    check = commands.add_parser("check-config", help="validate FILE, print the effective config")
    check.add_argument("file", metavar="FILE")
    health = commands.add_parser("health", help="ask the running proxy whether it is healthy")
    health.add_argument("--config", metavar="FILE", required=True, help="its configuration")
    health.add_argument(
        "--ready", action="store_true", help="ask /readyz (cache and IMAP server) not /healthz"
    )
    _admin_parsers(commands)
    return parser


def _admin_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    accounts = commands.add_parser("accounts", help="list the accounts in the cache")
    accounts.add_argument("--config", metavar="FILE", required=True, help="its configuration")
    accounts.add_argument("--json", action="store_true", help="JSON for scripts, not a table")
    sync = commands.add_parser("sync", help="have the running proxy fill USER's cache")
    sync.add_argument("user", metavar="USER", help="the IMAP login")
    sync.add_argument("--config", metavar="FILE", required=True, help="its configuration")
    sync.add_argument(
        "--password-file", metavar="F", help="read the password from F (else it is asked)"
    )
    cache = commands.add_parser("cache", help="prune or reset the cache")
    actions = cache.add_subparsers(dest="action", metavar="ACTION", required=True)
    prune = actions.add_parser("prune", help="purge old change-log rows and unused accounts")
    reset = actions.add_parser("reset", help="drop one account's rows, or the whole cache's")
    reset.add_argument("user", metavar="USER", nargs="?", help="its login or account id")
    prune.add_argument(
        "--unused-days",
        metavar="N",
        type=_days_arg,
        help="also drop the accounts with no login for N days",
    )
    for action in (prune, reset):
        action.add_argument("--config", metavar="FILE", required=True, help="its configuration")
        action.add_argument(
            "--force", action="store_true", help="even while the proxy answers (unsafe)"
        )


def _days_arg(value: str) -> float:
    try:
        days = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}") from None
    if not days >= 0 or days == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}")
    return days


def _listen_arg(value: str) -> str:
    try:
        split_listen(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _load(path: str) -> Config | None:
    """The validated config, or None after printing the problem to stderr."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"imapjmap: config error: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_USAGE
    setup_logging(cfg.server.log_level, cfg.server.log_format)
    for warning in config_warnings(cfg) + submission_warnings(cfg):
        log.warning("%s", warning)
    upstreams = cfg.all_upstreams()
    servers = ", ".join(
        f"{u.name + ' ' if len(upstreams) > 1 else ''}at {u.imap.host}:{u.imap.port}"
        for u in upstreams
    )
    # how the parsing modules run: python3 -m imapjmap.build_ext compiles them
    log.info("imapjmap %s starting: IMAP %s; %s", __version__, servers, compiled.describe())
    worker = bool(getattr(args, "worker", False))
    others = [] if worker else workers.start(args.config, cfg.server.workers - 1)
    app = importlib.import_module("imapjmap.http.app")  # pulls in aiohttp: only now
    try:
        return _status(app.serve(cfg, worker=worker))
    finally:
        workers.stop(others)


def _demo(args: argparse.Namespace) -> int:
    demo = _checkout_demo()
    if demo is None:
        print(NO_CHECKOUT, file=sys.stderr)
        return EXIT_USAGE
    try:
        setup_logging("info", log_file=args.log)
    except OSError as exc:
        print(f"imapjmap demo: cannot write the log: {exc}", file=sys.stderr)
        return EXIT_USAGE
    config = None if args.config is None else Path(args.config)
    return _status(demo.run_demo(listen=args.listen, config=config, log_file=args.log))


def _checkout_demo() -> ModuleType | None:
    """devservers.demo from the path or from the checkout this package was loaded from."""
    if (CHECKOUT / "devservers" / "demo.py").is_file() and str(CHECKOUT) not in sys.path:
        sys.path.append(str(CHECKOUT))  # after site-packages: never shadows what is installed
    try:
        return importlib.import_module("devservers.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("devservers", "devservers.demo"):
            raise  # a dependency of the demo is missing: its own message says which
        return None


def _check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    if cfg is None:
        return EXIT_USAGE
    for warning in config_warnings(cfg) + submission_warnings(cfg):
        print(f"imapjmap: warning: {warning}", file=sys.stderr)
    sys.stdout.write(to_toml(cfg))
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_USAGE
    running = importlib.import_module("imapjmap.admin.running")
    path = "/readyz" if args.ready else "/healthz"
    try:
        status, body = running.ask(cfg, path, HEALTH_TIMEOUT)
    except OSError as exc:
        print(f"imapjmap: {path} at {cfg.server.listen}: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    print(f"{path} {status}: {body}")
    return EXIT_OK if status == 200 else EXIT_UNHEALTHY


def _accounts(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_USAGE
    admin = importlib.import_module("imapjmap.admin.commands")  # loads sqlite3: only now
    return int(admin.accounts(cfg, as_json=args.json))


def _sync(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_USAGE
    setup_logging("warning", cfg.server.log_format)  # the bar, not the IMAP client's lines
    admin = importlib.import_module("imapjmap.admin.commands")
    return int(admin.sync(cfg, user=args.user, password_file=args.password_file))


def _cache(args: argparse.Namespace) -> int:
    cfg = _load(args.config)
    if cfg is None:
        return EXIT_USAGE
    admin = importlib.import_module("imapjmap.admin.commands")
    if args.action == "prune":
        return int(admin.prune(cfg, unused_days=args.unused_days, force=args.force))
    return int(admin.reset(cfg, user=args.user, force=args.force))


def _status(result: object) -> int:
    """An entry point's return value as an exit status (None means success)."""
    return result if isinstance(result, int) else EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve,
    "demo": _demo,
    "check-config": _check_config,
    "health": _health,
    "accounts": _accounts,
    "sync": _sync,
    "cache": _cache,
}
