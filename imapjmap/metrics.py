"""Prometheus metrics, named ``imapjmap_*``: the only module that imports prometheus_client.

Two kinds:

- **Events**, counted where they happen (HTTP requests, JMAP method calls, IMAP commands,
  SMTP submissions): process-wide counters and histograms in :data:`EVENTS`, so that the
  IMAP session and the SMTP client need no handle on the app to count.
- **Levels**, read when scraped (connections in the pools, accounts syncing and their
  first-sync progress, push listeners and watchers, the cache's size): each app registers
  a :class:`Levels` source that reads its own services, so two apps in one process (tests)
  never mix their gauges.

Rule 1: no label value comes from a user or a client: no user name, account id, mailbox or
        raw path.  Routes are the route templates, a method name is one the registry knows
        (else ``unknown``), an IMAP command is its verb as the code names it, the upstream is
        the configured ``host:port``.
Rule 2: counting costs a few microseconds: the labelled children of an event are looked
        up in prometheus_client once per label set and kept (the label sets are few, Rule
        1), nothing is formatted until a scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# a labelled counter child and histogram child of one label set, as kept by Events
_Pair = tuple[Counter, Histogram]

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST
# seconds: a cheap JMAP request takes milliseconds, a first sync's FETCH seconds
_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Events:
    """The process-wide event counters (see the module docstring)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "imapjmap_http_requests",
            "HTTP requests answered, by route template and status code",
            ["route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "imapjmap_http_request_duration_seconds",
            "Time to answer an HTTP request (a push stream: its whole life), by route",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.method_calls = Counter(
            "imapjmap_jmap_method_calls",
            "JMAP method calls, by method and outcome (ok or the JMAP error type)",
            ["method", "outcome"],
            registry=r,
        )
        self.method_seconds = Histogram(
            "imapjmap_jmap_method_duration_seconds",
            "Time to run one JMAP method call, by method",
            ["method"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.imap_commands = Counter(
            "imapjmap_imap_commands",
            "IMAP round trips, by upstream, command and outcome (ok, no, bad, unavailable,"
            " cancelled)",
            ["upstream", "command", "outcome"],
            registry=r,
        )
        self.imap_seconds = Histogram(
            "imapjmap_imap_command_duration_seconds",
            "Time from sending an IMAP command to its tagged answer, by upstream and command",
            ["upstream", "command"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.smtp_submissions = Counter(
            "imapjmap_smtp_submissions",
            "Messages handed to the SMTP server, by outcome (sent, refused, unavailable,"
            " lost: the connection failed after the data went out, cancelled)",
            ["outcome"],
            registry=r,
        )
        # prometheus_client's labels() validates and locks on every call: about 15 us an
        # event, twice per request and per method call (Rule 2)
        self._http: dict[tuple[str, int | str], _Pair] = {}
        self._methods: dict[tuple[str, str], _Pair] = {}
        self._imap: dict[tuple[str, str, str], _Pair] = {}

    def http_request(self, route: str, status: int | str, seconds: float) -> None:
        pair = self._http.get((route, status))
        if pair is None:
            pair = self._http[route, status] = (
                self.http_requests.labels(route, str(status)),
                self.http_seconds.labels(route),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def method_call(self, method: str, outcome: str, seconds: float) -> None:
        pair = self._methods.get((method, outcome))
        if pair is None:
            pair = self._methods[method, outcome] = (
                self.method_calls.labels(method, outcome),
                self.method_seconds.labels(method),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def imap_command(self, upstream: str, command: str, outcome: str, seconds: float) -> None:
        pair = self._imap.get((upstream, command, outcome))
        if pair is None:
            pair = self._imap[upstream, command, outcome] = (
                self.imap_commands.labels(upstream, command, outcome),
                self.imap_seconds.labels(upstream, command),
            )
        pair[0].inc()
        pair[1].observe(seconds)

    def smtp_submission(self, outcome: str) -> None:
        self.smtp_submissions.labels(outcome).inc()


EVENTS: Final = Events()


def imap_command_label(what: str) -> str:
    """``UID FETCH``, ``SELECT``, ...: the verb a command was sent as, upper case, at most
    two words (``UID`` takes the next one), so the label set stays small (Rule 1)."""
    words = what.upper().split()
    if not words:
        return "UNKNOWN"
    if words[0] == "UID" and len(words) > 1:
        return f"UID {words[1]}"[:24]
    return words[0][:24]


@dataclass(frozen=True, slots=True)
class Level:
    """One gauge value read at scrape time."""

    name: str  # without the imapjmap_ prefix
    help: str
    value: float
    labels: tuple[tuple[str, str], ...] = ()


class Levels(Collector):
    """An app's gauges, read from its services at each scrape by ``read``."""

    def __init__(self, read: Callable[[], Iterable[Level]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for level in self._read():
            name = f"imapjmap_{level.name}"
            family = families.get(name)
            if family is None:
                family = families[name] = GaugeMetricFamily(
                    name, level.help, labels=[k for k, _ in level.labels]
                )
            family.add_metric([v for _, v in level.labels], level.value)
        return list(families.values())


def render(levels: Levels | None) -> bytes:
    """The text exposition of every event metric and of ``levels``."""
    out = generate_latest(EVENTS.registry)
    if levels is not None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(levels)
        out += generate_latest(registry)
    return out
