"""Differential test: what Prometheus stores through the relay equals what it stores scraping the upstream.

Each real fixture body is served (gzipped, as a kube-apiserver does) by its own mTLS upstream. One
in-process relay serves every fixture once per rule set (`/metrics/<fixture>--<rule set>`, each upstream
entry with its own `metric_relabel_configs`). One real Prometheus 2.42 scrapes, per fixture and rule set,
the upstream directly with the rules (job `direct-…`) and the relay without rules (job `relayed-…`).
Once every job has had a good scrape, scraping stops, and the two jobs' series stored at one moment, job
and instance aside, must be identical: label sets and values. promtool must parse every relayed text body.

The OpenMetrics fixtures' upstreams answer OpenMetrics 1.0 (whatever the Accept header), so Prometheus
parses OpenMetrics scraping them directly, and the relay, asked OpenMetrics first as Prometheus asks, must
ask the upstream for it and relay OpenMetrics, `# EOF` last. Prometheus runs with exemplar storage on,
and the two jobs' exemplars (labels, value, timestamp, and the series they are on) must be identical too.
promtool 2.42 parses the text format only (an exemplar is a parse error there): OpenMetrics bodies are
not given to it. A relayed job Prometheus cannot scrape at all (it refuses the body) fails its own cases
with the scrape error, not the whole module.

Prometheus 2.42 anchors regexes as `^(?:…)$` (no `(?s:`) and checks label names the legacy way; the rules
below avoid label values with newlines and invalid target names, so current Prometheus agrees with it.
Prometheus 3 also normalises `le` and `quantile` values when it parses (`1` becomes `1.0`) and the
relay does not, so no rule copies those values into another label, and rules matching them accept both
forms.
Metric relabeling in Prometheus sees the target labels (job, instance), so no rule here reads, writes or
drops them, and labelkeep keeps them.

Timing (two cores): the relay's first pass over ~900k series costs several seconds of this event loop,
and Prometheus' first ingestion of as many series several more. So Prometheus starts on the direct jobs
while the relay is warmed up, and the relayed jobs are added after: the relay's cold start then does
not meet Prometheus' scrape timeouts, whose retries would keep it busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gzip
import hashlib
import os
import textwrap
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from tests.prometheus_oracle import (
    ExemplarKey,
    LabelSet,
    OracleError,
    Prometheus,
    PromtoolVerdict,
    diff_exemplars,
    diff_series,
    prometheus_config,
    promtool_check_metrics,
    running_prometheus,
    scrape_job,
)
from tests.support import (
    ClientFiles,
    Handler,
    Pki,
    config_yaml,
    require_fixtures,
    require_tool,
    running_relay,
    running_upstream,
)

pytestmark = [pytest.mark.peer, pytest.mark.fixtures, pytest.mark.usefixtures("engine")]

# Text format 0.0.4 fixtures, by a short id.
TEXT_FIXTURE_FILES = {
    "kube-apiserver": "kube-apiserver-1.35-minikube.prom",
    "kube-scheduler": "kube-scheduler-1.35-minikube.prom",
    "kube-controller-manager": "kube-controller-manager-1.35-minikube.prom",
    "etcd": "etcd-1.35-minikube.prom",
    "prometheus-alltypes": "prometheus-alltypes.237mfs.prom.txt",
}
# OpenMetrics 1.0 fixtures (exemplars, `_created`, `# EOF`), served as OpenMetrics whatever the Accept header.
OPENMETRICS_FIXTURE_FILES = {
    "openmetrics-alltypes": "openmetrics-alltypes.5mfs.om.txt",
    "openmetrics-1histogram": "openmetrics-1histogram.om.txt",
}
FIXTURE_FILES = TEXT_FIXTURE_FILES | OPENMETRICS_FIXTURE_FILES
# openmetrics-1histogram is one histogram family, `golang_manual_histogram_seconds`: rules selecting by
# name either keep or drop all of it, or match none of it.
ALL_BUT_1HISTOGRAM = tuple(fixture for fixture in FIXTURE_FILES if fixture != "openmetrics-1histogram")

TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
# The Accept header of Prometheus 2.42's scrapes (scrape/scrape.go, scrapeAcceptHeader).
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


@dataclass(frozen=True)
class RuleSet:
    """A named `metric_relabel_configs` list; `affects` names the fixtures it must change (None: all)."""

    name: str
    rules: tuple[dict[str, Any], ...]
    affects: tuple[str, ...] | None = None


RULE_SETS = (
    RuleSet("none", ()),
    RuleSet(
        "drop-by-name",
        ({"source_labels": ["__name__"], "regex": "go_.*|process_.*", "action": "drop"},),
        affects=ALL_BUT_1HISTOGRAM,
    ),
    RuleSet(
        "keep-by-name",
        (
            {
                "source_labels": ["__name__"],
                "regex": "(apiserver|etcd|scheduler|workqueue|prometheus|rpc|golang)_.+",
                "action": "keep",
            },
        ),
        affects=ALL_BUT_1HISTOGRAM,
    ),
    RuleSet("replace-static", ({"target_label": "cluster", "replacement": "ack-one/test"},)),
    RuleSet(
        "replace-capture-groups",
        (
            # $1 from the default regex's group; a template target label.
            {"source_labels": ["__name__"], "regex": "([a-z]+)_.*", "target_label": "${1}_family"},
            # ${1}x is group 1 then "x"; $1x is the (missing, so empty) group "1x": no label at all.
            {
                "source_labels": ["__name__"],
                "regex": "([a-z]+)_.*",
                "target_label": "braced",
                "replacement": "${1}x",
            },
            {
                "source_labels": ["__name__"],
                "regex": "([a-z]+)_.*",
                "target_label": "greedy",
                "replacement": "$1x",
            },
            # Two source labels with a custom separator, groups swapped; no match leaves things alone.
            {
                "source_labels": ["__name__", "le"],
                "separator": "@",
                "regex": "(.+)_bucket@(0\\.[0-9]+|\\+Inf)",
                "target_label": "small_bucket",
                "replacement": "$2 in $1",
            },
        ),
    ),
    RuleSet(
        "replace-empty-deletes",
        (
            {"target_label": "cluster", "replacement": "c1"},
            {"source_labels": ["__name__"], "regex": "go_.*", "target_label": "cluster", "replacement": ""},
            # An absent source label is the empty string, and a group the regex lacks expands to nothing.
            {
                "source_labels": ["no_such_label", "__name__"],
                "regex": ";(process_.*)",
                "target_label": "cluster",
                "replacement": "$2",
            },
        ),
    ),
    RuleSet(
        "labelmap",
        (
            {
                "action": "labelmap",
                "regex": "(code|verb|resource|name|handler|plugin|service|port)",
                "replacement": "mapped_$1",
            },
        ),
    ),
    # Dropping `le` makes histogram buckets collide: Prometheus keeps the first sample of a series.
    RuleSet(
        "labeldrop",
        ({"action": "labeldrop", "regex": "component|version|dry_run|host|cidr|grpc_type|le"},),
    ),
    RuleSet(
        "labelkeep",
        (
            {
                "action": "labelkeep",
                "regex": "__name__|job|instance|le|quantile|code|verb|resource|subresource|scope|group"
                "|name|grpc_.+|handler|plugin|extension_point|status|result|op|type",
            },
        ),
    ),
    RuleSet(
        "lowercase-uppercase",
        (
            {"source_labels": ["__name__"], "target_label": "upper_name", "action": "uppercase"},
            {
                "source_labels": ["__name__", "verb"],
                "separator": "/",
                "target_label": "lower",
                "action": "Lowercase",
            },
        ),
    ),
    RuleSet(
        "hashmod-shard",
        (
            {"source_labels": ["__name__"], "modulus": 3, "target_label": "shard", "action": "hashmod"},
            # Shard 0 holds some of every fixture's names (openmetrics-1histogram's _bucket and _count).
            {"source_labels": ["shard"], "regex": "0", "action": "keep"},
        ),
    ),
    RuleSet(
        "keepequal-dropequal",
        (
            {"source_labels": ["le"], "regex": "(\\+Inf|1|1\\.0)", "target_label": "le_copy"},
            # Series without le compare "" with an absent le_copy ("") and are kept.
            {"source_labels": ["le"], "target_label": "le_copy", "action": "keepequal"},
            {"source_labels": ["__name__"], "regex": "(process_.*)", "target_label": "name_copy"},
            {"source_labels": ["__name__"], "target_label": "name_copy", "action": "dropequal"},
        ),
    ),
    RuleSet(
        "rename-name",
        (
            {
                "source_labels": ["__name__"],
                "regex": "go_(.*)",
                "target_label": "__name__",
                "replacement": "golang_$1",
            },
            # Splits histograms: their buckets get a family name of their own.
            {
                "source_labels": ["__name__"],
                "regex": "(.+_seconds)_bucket",
                "target_label": "__name__",
                "replacement": "${1}_buckets",
            },
        ),
    ),
    # After kube-prometheus' kube-apiserver ServiceMonitor (manifests/kubernetesControlPlane-
    # serviceMonitorApiserver.yaml): drop families by name, and some buckets by [__name__, le]; the
    # `(\.0)?` makes the bucket rule match Prometheus 3's normalised `le` values too.
    RuleSet(
        "kube-prometheus-apiserver",
        (
            {"source_labels": ["__name__"], "regex": "etcd_(debugging|disk|server).*", "action": "drop"},
            {
                "source_labels": ["__name__"],
                "regex": "apiserver_admission_step_admission_latencies_seconds_.*",
                "action": "drop",
            },
            {
                "source_labels": ["__name__", "le"],
                "regex": "apiserver_request_duration_seconds_bucket;(0.15|0.25|0.3|0.35|0.4|0.45|0.6|0.7|0.8"
                "|0.9|1.25|1.5|1.75|2.5|3|3.5|4.5|6|7|8|9|15|25|30|50)(\\.0)?",
                "action": "drop",
            },
        ),
        affects=("kube-apiserver", "etcd"),
    ),
)
RULE_SET_NAMES = [rule_set.name for rule_set in RULE_SETS]
EXEMPLARS_MAY_BE_LOST = frozenset({"rename-name", "labeldrop"})
RULE_SETS_BY_NAME = {rule_set.name: rule_set for rule_set in RULE_SETS}


@dataclass(frozen=True)
class Comparison:
    """One rule set on one fixture: how the two jobs' stored series differ."""

    diff: str
    direct_count: int
    relayed_equals_unrelabelled: bool  # the relay's series are what Prometheus stores without rules
    rules_changed_direct: bool  # the rules changed what Prometheus stores (against no rules)
    exemplar_diff: str  # how the two jobs' stored exemplars differ (OpenMetrics fixtures only)
    relayed_exemplars_are_direct_ones: bool  # every exemplar stored through the relay is one stored directly
    direct_exemplars: int
    relayed_scrape_error: str | None  # why every scrape of the relay failed, if they all did

    @property
    def scrape_note(self) -> str:
        """For failure messages: why Prometheus stored nothing through the relay, if it did not."""
        if self.relayed_scrape_error is None:
            return ""
        return f"\n(Prometheus failed every scrape of the relay: {self.relayed_scrape_error})"


@dataclass(frozen=True)
class RelayedBody:
    """A body the relay served for one fixture and rule set: its format, promtool's verdict, its digest."""

    content_type: str
    last_line: bytes  # with its newline, if any
    eof_lines: int  # lines `# EOF`
    promtool: PromtoolVerdict | None  # None for OpenMetrics, which promtool does not parse
    sha256: str


@dataclass
class FixtureOutcome:
    """Everything the tests look at for one fixture, by rule set where it depends on one."""

    upstream_lint: frozenset[str] | None  # promtool's lint of the fixture itself (text fixtures only)
    upstream_names: frozenset[str]
    cold: dict[str, RelayedBody]  # the relay's first answer for each rule set
    warm_sha256: dict[str, str] = field(default_factory=dict)  # its answer after Prometheus' scrapes
    comparisons: dict[str, Comparison] = field(default_factory=dict)


def upstream_name(fixture: str, rule_set: str) -> str:
    """The relay's upstream entry (and URL path segment) for a fixture and rule set."""
    return f"{fixture}--{rule_set}"


def is_openmetrics(fixture: str) -> bool:
    """Whether the fixture is OpenMetrics 1.0 (and its upstream answers as such)."""
    return fixture in OPENMETRICS_FIXTURE_FILES


def gzip_handler(body: bytes, content_type: str) -> Handler:
    """The body with this Content-Type, gzipped when the client accepts it, as a kube-apiserver does.

    It ignores the Accept header: a relay that asked an OpenMetrics upstream for text only gets OpenMetrics,
    refuses it and fails the scrape.
    """
    compressed = gzip.compress(body, compresslevel=6)

    async def handle(request: web.Request) -> web.StreamResponse:
        headers = {"Content-Type": content_type}
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=compressed, headers=headers)
        return web.Response(body=body, headers=headers)

    return handle


def relay_config(urls: dict[str, str], files: ClientFiles) -> str:
    """One relay upstream per fixture and rule set, each with its rules."""
    entries = []
    for fixture, url in urls.items():
        for rule_set in RULE_SETS:
            extra = ""
            if rule_set.rules:
                rules = yaml.safe_dump([dict(rule) for rule in rule_set.rules], sort_keys=False)
                extra = "    metric_relabel_configs:\n" + textwrap.indent(rules, "      ")
            name = upstream_name(fixture, rule_set.name)
            entries.append(config_yaml(url, files, extra, name=name).removeprefix("upstreams:\n"))
    return "upstreams:\n" + "".join(entries)


# Every job is scraped this often, and a scrape may take as long. Shorter intervals make the CPU-bound
# relay (in this event loop) and Prometheus' first ingestion compete harder; longer ones delay the start.
SCRAPE_INTERVAL_SECONDS = 3.0


def scrape_jobs(urls: dict[str, str], relay_url: str, files: ClientFiles) -> list[dict[str, Any]]:
    """Per fixture and rule set: the upstream over mTLS with the rules, and the relay without rules."""
    relay_host = relay_url.split("/")[2]
    jobs = []
    for fixture, url in urls.items():
        upstream_host = url.split("/")[2]
        for rule_set in RULE_SETS:
            name = upstream_name(fixture, rule_set.name)
            direct = scrape_job(
                f"direct-{name}",
                upstream_host,
                "/metrics",
                rules=rule_set.rules,
                tls=files,
                interval_seconds=SCRAPE_INTERVAL_SECONDS,
            )
            relayed = scrape_job(
                f"relayed-{name}", relay_host, f"/metrics/{name}", interval_seconds=SCRAPE_INTERVAL_SECONDS
            )
            jobs += [direct, relayed]
    return jobs


def relayed_body(body: bytes, content_type: str) -> RelayedBody:
    """What the tests keep of a relayed body (promtool's verdict comes later)."""
    lines = body.splitlines(keepends=True)
    return RelayedBody(
        content_type=content_type,
        last_line=lines[-1] if lines else b"",
        eof_lines=sum(1 for line in lines if line.rstrip(b"\n") == b"# EOF"),
        promtool=None,
        sha256=hashlib.sha256(body).hexdigest(),
    )


def metric_names(body: bytes) -> frozenset[str]:
    """The metric names in a text-format body's samples and metadata."""
    names = set()
    for line in body.decode("utf-8").splitlines():
        if line.startswith(("# HELP ", "# TYPE ")):
            names.add(line.split(" ", 3)[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{", 1)[0].split(" ", 1)[0])
    return frozenset(names)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def differential(tmp_path_factory) -> dict[str, FixtureOutcome]:
    """Run the upstreams, the relay and Prometheus once; compare every fixture and rule set."""
    fixtures = require_fixtures()
    prometheus_binary = require_tool("prometheus")
    promtool_binary = require_tool("promtool")
    bodies = {fixture: (fixtures / file).read_bytes() for fixture, file in FIXTURE_FILES.items()}
    directory = tmp_path_factory.mktemp("differential")
    pki = Pki(directory)
    async with contextlib.AsyncExitStack() as stack:
        urls = {}
        for fixture, body in bodies.items():
            content_type = OPENMETRICS_CONTENT_TYPE if is_openmetrics(fixture) else TEXT_CONTENT_TYPE
            upstream = await stack.enter_async_context(
                running_upstream(pki.server_context(), gzip_handler(body, content_type))
            )
            urls[fixture] = upstream.url
        relay = await stack.enter_async_context(
            running_relay(relay_config(urls, pki.client_files("relay")), directory)
        )
        jobs = scrape_jobs(urls, relay.base_url, pki.client_files("prometheus"))
        # The direct jobs first, the relayed ones once the relay is warm (see the module's docstring).
        direct_jobs = [job for job in jobs if job["job_name"].startswith("direct-")]
        prometheus = await stack.enter_async_context(
            running_prometheus(
                prometheus_binary,
                prometheus_config(direct_jobs),
                directory / "prometheus",
                features=("exemplar-storage",),
            )
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        outcomes = await warm_up_and_lint(session, relay.base_url, promtool_binary, bodies)
        await prometheus.reload(prometheus_config(jobs))
        job_names = [job["job_name"] for job in jobs]
        # A relayed job whose every scrape fails (Prometheus refuses the relayed body) fails its own cases.
        failed = await prometheus.wait_until_up(
            job_names, within=90, give_up_after=3 * SCRAPE_INTERVAL_SECONDS
        )
        failed_direct = {job: error for job, error in failed.items() if job.startswith("direct-")}
        if failed_direct:
            raise OracleError(f"Prometheus cannot scrape some upstreams itself: {failed_direct}")
        await prometheus.stop_scraping()
        at = await prometheus.last_time_all_up(job for job in job_names if job not in failed)
        comparisons = await compare_all_series(prometheus, at, failed)
        for fixture, outcome in outcomes.items():
            outcome.comparisons = comparisons[fixture]
            for name in RULE_SET_NAMES:
                body, _ = await fetch_relayed(session, relay.base_url, fixture, name)
                outcome.warm_sha256[name] = hashlib.sha256(body).hexdigest()
    return outcomes


async def fetch_relayed(
    session: aiohttp.ClientSession, relay_url: str, fixture: str, rule_set: str
) -> tuple[bytes, str]:
    """The relay's answer for a fixture and rule set, and its Content-Type.

    OpenMetrics fixtures are asked for as Prometheus asks (OpenMetrics first), text fixtures without Accept.
    """
    url = f"{relay_url}/metrics/{upstream_name(fixture, rule_set)}"
    headers = {"Accept": PROMETHEUS_ACCEPT} if is_openmetrics(fixture) else {}
    async with session.get(url, headers=headers) as answer:
        assert answer.status == 200, f"{url}: {answer.status} {await answer.text()}"
        return await answer.read(), answer.headers.get("Content-Type", "")


async def warm_up_and_lint(
    session: aiohttp.ClientSession, relay_url: str, promtool: str, bodies: dict[str, bytes]
) -> dict[str, FixtureOutcome]:
    """Fetch every relayed body once, the relay's first answer, and run promtool on it and on the fixtures.

    The relay works in this event loop, promtool in processes beside it: while promtool checks one
    body, the relay makes the next. promtool (2.42) parses only the text format: an exemplar is a parse
    error there, so OpenMetrics bodies are not given to it.
    """
    cpus = asyncio.Semaphore(os.cpu_count() or 2)

    async def check(body: bytes) -> PromtoolVerdict:
        async with cpus:
            return await promtool_check_metrics(promtool, body)

    text_bodies = {fixture: body for fixture, body in bodies.items() if not is_openmetrics(fixture)}
    async with asyncio.TaskGroup() as group:
        upstream_checks = {fixture: group.create_task(check(body)) for fixture, body in text_bodies.items()}
        relayed: dict[str, dict[str, tuple[RelayedBody, asyncio.Task[PromtoolVerdict] | None]]] = {}
        for fixture in bodies:
            relayed[fixture] = {}
            for name in RULE_SET_NAMES:
                body, content_type = await fetch_relayed(session, relay_url, fixture, name)
                task = None if is_openmetrics(fixture) else group.create_task(check(body))
                relayed[fixture][name] = (relayed_body(body, content_type), task)
    outcomes = {}
    for fixture, body in bodies.items():
        upstream_lint = None
        if fixture in upstream_checks:
            upstream_verdict = upstream_checks[fixture].result()
            assert upstream_verdict.parse_error is None, (
                f"promtool cannot parse {fixture}: {upstream_verdict}"
            )
            upstream_lint = upstream_verdict.lint
        outcomes[fixture] = FixtureOutcome(
            upstream_lint=upstream_lint,
            upstream_names=metric_names(body),
            cold={
                name: dataclasses.replace(summary, promtool=task and task.result())
                for name, (summary, task) in relayed[fixture].items()
            },
        )
    return outcomes


async def compare_all_series(
    prometheus: Prometheus, at: float, failed: dict[str, str]
) -> dict[str, dict[str, Comparison]]:
    """Per fixture and rule set: how what Prometheus stored through the relay differs from its own relabeling.

    Two at a time: Prometheus encodes one answer while this process decodes another. Exemplars only for
    the OpenMetrics fixtures: the text format has none. A relayed job in `failed` (job: its scrape error)
    never had a good scrape: it has nothing to compare.
    """
    parallel = asyncio.Semaphore(2)

    async def series(job: str) -> dict[LabelSet, str]:
        if job in failed:
            return {}
        async with parallel:
            return await prometheus.stored_series(job, at)

    async def exemplars(fixture: str, job: str) -> dict[ExemplarKey, str]:
        if not is_openmetrics(fixture) or job in failed:
            return {}
        async with parallel:
            return await prometheus.stored_exemplars(job)

    async def compare(fixture: str) -> dict[str, Comparison]:
        unrelabelled = await series(f"direct-{upstream_name(fixture, 'none')}")
        found = {}
        for rule_set in RULE_SETS:
            name = upstream_name(fixture, rule_set.name)
            direct, relayed, direct_exemplars, relayed_exemplars = await asyncio.gather(
                series(f"direct-{name}"),
                series(f"relayed-{name}"),
                exemplars(fixture, f"direct-{name}"),
                exemplars(fixture, f"relayed-{name}"),
            )
            found[rule_set.name] = Comparison(
                diff=diff_series(direct, relayed),
                direct_count=len(direct),
                relayed_equals_unrelabelled=relayed == unrelabelled,
                rules_changed_direct=direct != unrelabelled,
                exemplar_diff=diff_exemplars(direct_exemplars, relayed_exemplars),
                relayed_exemplars_are_direct_ones=relayed_exemplars.items() <= direct_exemplars.items(),
                direct_exemplars=len(direct_exemplars),
                relayed_scrape_error=failed.get(f"relayed-{name}"),
            )
        return found

    results = await asyncio.gather(*(compare(fixture) for fixture in FIXTURE_FILES))
    return dict(zip(FIXTURE_FILES, results, strict=True))


TIMEOUT = pytest.mark.timeout(180)  # the first test also pays for the module fixture


@TIMEOUT
@pytest.mark.parametrize("rule_set", RULE_SET_NAMES)
@pytest.mark.parametrize("fixture", FIXTURE_FILES)
def test_relayed_series_equal_prometheus_own_relabeling(differential, fixture, rule_set):
    """Prometheus stores the same series and values scraping the relay as applying the rules itself."""
    comparison = differential[fixture].comparisons[rule_set]
    assert comparison.direct_count > 0, f"{fixture}/{rule_set}: Prometheus stored nothing"
    if comparison.diff:
        hint = ""
        if comparison.relayed_equals_unrelabelled and comparison.rules_changed_direct:
            hint = (
                "\n(the relayed series are exactly the upstream's without rules: the relay did not relabel)"
            )
        pytest.fail(
            f"{fixture}, rule set {rule_set!r}: Prometheus via the relay (relayed) differs "
            f"from Prometheus applying the rules (direct):\n{comparison.diff}{hint}{comparison.scrape_note}"
        )


@TIMEOUT
@pytest.mark.parametrize("fixture", FIXTURE_FILES)
def test_prometheus_stores_every_fixture_sample(differential, fixture):
    """Without rules Prometheus stores one series per sample line: 2.42 parses the whole fixture."""
    body = (require_fixtures() / FIXTURE_FILES[fixture]).read_bytes()
    sample_lines = sum(1 for line in body.splitlines() if line.strip() and not line.startswith(b"#"))
    assert differential[fixture].comparisons["none"].direct_count == sample_lines


@TIMEOUT
@pytest.mark.parametrize("rule_set", [rule_set.name for rule_set in RULE_SETS if rule_set.rules])
@pytest.mark.parametrize("fixture", FIXTURE_FILES)
def test_rule_set_changes_what_prometheus_stores(differential, fixture, rule_set):
    """Each rule set changes Prometheus' own result exactly for the fixtures it targets: the table bites."""
    affects = RULE_SETS_BY_NAME[rule_set].affects
    expected = affects is None or fixture in affects
    assert differential[fixture].comparisons[rule_set].rules_changed_direct == expected


@TIMEOUT
@pytest.mark.parametrize("rule_set", RULE_SET_NAMES)
@pytest.mark.parametrize("fixture", OPENMETRICS_FIXTURE_FILES)
def test_relayed_exemplars_equal_prometheus_own_relabeling(differential, fixture, rule_set):
    """Prometheus stores the same exemplars (on the same series) through the relay as applying the rules.

    Two documented losses (README, known differences): a series renamed away from `_total`/`_bucket` loses
    its exemplar (OpenMetrics allows none there), and a duplicate that relabeling made is dropped with its
    exemplar. There, every exemplar stored through the relay must still be one stored directly.
    """
    comparison = differential[fixture].comparisons[rule_set]
    if rule_set in EXEMPLARS_MAY_BE_LOST:
        assert comparison.relayed_exemplars_are_direct_ones, comparison.exemplar_diff
        return
    if comparison.exemplar_diff:
        pytest.fail(
            f"{fixture}, rule set {rule_set!r}: exemplars via the relay (relayed) differ from those "
            f"Prometheus stores applying the rules (direct):\n{comparison.exemplar_diff}"
            f"{comparison.scrape_note}"
        )


@TIMEOUT
def test_prometheus_stores_the_fixture_exemplars(differential):
    """Exemplar storage is on, so the exemplar comparison bites: all six of openmetrics-alltypes' are kept."""
    assert differential["openmetrics-alltypes"].comparisons["none"].direct_exemplars == 6


@TIMEOUT
@pytest.mark.parametrize("rule_set", RULE_SET_NAMES)
@pytest.mark.parametrize("fixture", FIXTURE_FILES)
def test_relayed_body_keeps_the_upstream_format(differential, fixture, rule_set):
    """Asked as Prometheus asks, the relay serves OpenMetrics as OpenMetrics, `# EOF` last; text as text."""
    relayed = differential[fixture].cold[rule_set]
    if is_openmetrics(fixture):
        assert relayed.content_type == OPENMETRICS_CONTENT_TYPE
        assert (relayed.last_line, relayed.eof_lines) == (b"# EOF\n", 1)
    else:
        assert relayed.content_type == TEXT_CONTENT_TYPE
        assert relayed.eof_lines == 0


@TIMEOUT
@pytest.mark.parametrize("rule_set", RULE_SET_NAMES)
@pytest.mark.parametrize("fixture", TEXT_FIXTURE_FILES)
def test_promtool_parses_relayed_body(differential, fixture, rule_set):
    """promtool parses every relayed text body; lint problems are only those the upstream body has itself.

    promtool 2.42 parses the text format only (an OpenMetrics exemplar is a parse error to it), so the
    OpenMetrics fixtures are not checked here.
    """
    outcome = differential[fixture]
    verdict = outcome.cold[rule_set].promtool
    assert verdict is not None
    assert outcome.upstream_lint is not None
    assert verdict.parse_error is None, f"{fixture}/{rule_set}: {verdict.parse_error}"
    # Families renamed by the rules are new names: their lint is not the upstream's to compare with.
    new = sorted(
        line
        for line in verdict.lint - outcome.upstream_lint
        if line.split(" ", 1)[0] in outcome.upstream_names
    )
    if new:
        pytest.fail(
            f"{fixture}/{rule_set}: lint problems the upstream does not have:\n" + "\n".join(new[:20])
        )


@TIMEOUT
@pytest.mark.parametrize("rule_set", RULE_SET_NAMES)
@pytest.mark.parametrize("fixture", FIXTURE_FILES)
def test_relay_answers_the_same_cold_and_warm(differential, fixture, rule_set):
    """The relay's first answer and its answer after many scrapes (memo filled) are byte for byte equal."""
    outcome = differential[fixture]
    assert outcome.cold[rule_set].sha256 == outcome.warm_sha256[rule_set]
