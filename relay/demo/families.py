"""A simulated managed control plane's /metrics, text format 0.0.4 or OpenMetrics: pure, changing with time.

The families are modelled on what kube-apiserver, kube-scheduler and Alibaba Cloud's
cloud-controller-manager export. How the real Metrics Aggregator keeps the components apart is not
documented; this stand-in writes every family once and gives the ones several components export
(process_*, go_*, rest_client_*, workqueue_*, leader election) a `component` label. Those shared
families are here, with the simulation that steps every component; each component's own families are in
`apiserver`, `scheduler` and `cloudcontroller`, and `textformat` renders them all.

Counters, histograms and summary sums only grow: time passing adds work, and every exposition counts
itself as a GET of /metrics. Some label values carry `"`, `\\` and newlines, which relays must keep
escaped.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.demo.apiserver import ApiServer
from relay.demo.cloudcontroller import CloudControllerManager
from relay.demo.dice import Dice
from relay.demo.scheduler import Scheduler
from relay.demo.textformat import Gauge, Registry, exponential_bounds

APISERVER = "kube-apiserver"
SCHEDULER = "kube-scheduler"
CLOUD_CONTROLLER_MANAGER = "cloud-controller-manager"
_APISERVER_HOST = "172.16.0.10:6443"
_LOOPBACK_HOST = "[::1]:6443"
_GO_VERSION = "go1.24.6"

# Work queues: component, queue name, adds per second, median wait, median processing time.
_WORK_QUEUES = (
    (CLOUD_CONTROLLER_MANAGER, "service", 0.05, 0.00002, 0.4),
    (CLOUD_CONTROLLER_MANAGER, "node", 0.1, 0.00001, 0.05),
    (CLOUD_CONTROLLER_MANAGER, "route", 0.02, 0.00001, 0.3),
    (APISERVER, "APIServiceRegistrationController", 0.01, 0.00003, 0.0002),
    (APISERVER, "DiscoveryController", 0.02, 0.00002, 0.001),
    (APISERVER, "crd_finalizer", 0.001, 0.00001, 0.00005),
)

# Each component's client of kube-apiserver: host, then verb and requests per second.
_REST_CLIENTS = (
    (SCHEDULER, _APISERVER_HOST, (("GET", 0.3), ("PUT", 0.5), ("POST", 0.7), ("PATCH", 0.02))),
    (CLOUD_CONTROLLER_MANAGER, _APISERVER_HOST, (("GET", 0.3), ("PATCH", 0.2), ("PUT", 0.5))),
    (APISERVER, _LOOPBACK_HOST, (("GET", 0.05), ("PUT", 0.3))),
)
_REST_CLIENT_BOUNDS = (0.005, 0.025, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


@dataclass(frozen=True, slots=True)
class _Process:
    """A control-plane process: CPU cores it uses, memory, goroutines, threads, GC cycles per second."""

    component: str
    cpu_cores: float
    resident_bytes: float
    goroutines: int
    threads: int
    gc_rate: float


_PROCESSES = (
    _Process(APISERVER, 0.25, 620e6, 2400, 22, 0.2),
    _Process(SCHEDULER, 0.02, 65e6, 180, 12, 0.03),
    _Process(CLOUD_CONTROLLER_MANAGER, 0.01, 48e6, 140, 11, 0.02),
)


class _Shared:
    """Families every component exports, told apart by a `component` label."""

    def __init__(self, registry: Registry) -> None:
        self.leader = registry.gauge(
            "leader_election_master_status",
            "[ALPHA] 1 while this instance leads, 0 otherwise.",
            ("component", "name"),
        )
        self.queue_depth = registry.gauge(
            "workqueue_depth", "[ALPHA] Items waiting in the work queue.", ("component", "name")
        )
        self.queue_adds = registry.counter(
            "workqueue_adds_total", "[ALPHA] Items added to the work queue.", ("component", "name")
        )
        self.queue_retries = registry.counter(
            "workqueue_retries_total", "[ALPHA] Items put back into the work queue.", ("component", "name")
        )
        workqueue_bounds = exponential_bounds(1e-8, 10, 10)
        self.queue_wait = registry.histogram(
            "workqueue_queue_duration_seconds",
            "[ALPHA] Time an item waits in the work queue before it is taken.",
            workqueue_bounds,
            ("component", "name"),
        )
        self.queue_work = registry.histogram(
            "workqueue_work_duration_seconds",
            "[ALPHA] Time to process an item taken from the work queue.",
            workqueue_bounds,
            ("component", "name"),
        )
        self.rest_requests = registry.counter(
            "rest_client_requests_total",
            "[ALPHA] HTTP requests to kube-apiserver, by status code, method and host.",
            ("code", "component", "host", "method"),
        )
        self.rest_duration = registry.histogram(
            "rest_client_request_duration_seconds",
            "[ALPHA] Latency of HTTP requests to kube-apiserver, by verb and host.",
            _REST_CLIENT_BOUNDS,
            ("component", "host", "verb"),
        )

    def step(self, dice: Dice, seconds: float) -> None:
        """Run the components' work queues and API clients for `seconds`."""
        self.leader.set((SCHEDULER, "kube-scheduler"), 1)
        self.leader.set((CLOUD_CONTROLLER_MANAGER, "cloud-controller-manager"), 1)
        for component, name, rate, wait, work in _WORK_QUEUES:
            adds = dice.events(rate, seconds)
            self.queue_adds.add((component, name), adds)
            self.queue_retries.add((component, name), dice.events(rate / 50, seconds))
            self.queue_depth.set((component, name), dice.between(0, 1))
            self.queue_wait.observe((component, name), adds, dice.latency(wait))
            self.queue_work.observe((component, name), adds, dice.latency(work))
        for component, host, verbs in _REST_CLIENTS:
            for verb, rate in verbs:
                count = dice.events(rate, seconds)
                conflicts = dice.events(rate / 400, seconds) if verb == "PUT" else 0
                code = "201" if verb == "POST" else "200"
                self.rest_requests.add((code, component, host, verb), count)
                if verb == "PUT":
                    self.rest_requests.add(("409", component, host, verb), conflicts)
                self.rest_duration.observe((component, host, verb), count + conflicts, dice.latency(0.006))


class _Runtime:
    """process_* and go_* of every component."""

    def __init__(self, registry: Registry) -> None:
        def per_component(name: str, help_text: str) -> Gauge:
            return registry.gauge(name, help_text, ("component",))

        self.cpu = registry.counter(
            "process_cpu_seconds_total", "User and system CPU time spent, in seconds.", ("component",)
        )
        self.received = registry.counter(
            "process_network_receive_bytes_total", "Bytes received over the network.", ("component",)
        )
        self.sent = registry.counter(
            "process_network_transmit_bytes_total", "Bytes sent over the network.", ("component",)
        )
        self.resident = per_component("process_resident_memory_bytes", "Resident memory size in bytes.")
        self.virtual = per_component("process_virtual_memory_bytes", "Virtual memory size in bytes.")
        self.open_fds = per_component("process_open_fds", "Open file descriptors.")
        self.max_fds = per_component("process_max_fds", "Most file descriptors the process may open.")
        self.start_time = per_component(
            "process_start_time_seconds", "When the process started, in Unix time."
        )
        self.goroutines = per_component("go_goroutines", "Goroutines that currently exist.")
        self.threads = per_component("go_threads", "OS threads created.")
        self.heap = per_component("go_memstats_heap_alloc_bytes", "Heap bytes allocated and still in use.")
        self.info = registry.gauge(
            "go_info", "Information about the Go environment.", ("component", "version")
        )
        self.gc_pauses = registry.summary(
            "go_gc_duration_seconds",
            "Stop-the-world pause time of garbage collection cycles.",
            ("component",),
        )

    def start(self, started: float) -> None:
        """Set what stays fixed while the processes run."""
        for offset, process in enumerate(_PROCESSES):
            key = (process.component,)
            self.start_time.set(key, round(started + 7.31 * offset, 2))
            self.max_fds.set(key, 1048576)
            self.info.set((process.component, _GO_VERSION), 1)

    def step(self, dice: Dice, seconds: float) -> None:
        """Spend `seconds` of CPU, traffic and garbage collection."""
        for process in _PROCESSES:
            key = (process.component,)
            self.cpu.add(key, dice.around(process.cpu_cores * seconds, 0.2))
            self.received.add(key, dice.events(process.cpu_cores * 4e5, seconds))
            self.sent.add(key, dice.events(process.cpu_cores * 9e5, seconds))
            resident = round(dice.around(process.resident_bytes))
            self.resident.set(key, resident)
            self.heap.set(key, round(resident * dice.around(0.55, 0.2)))
            self.virtual.set(key, round(resident * 2.6 + 1.2e9))
            self.open_fds.set(key, round(dice.around(process.goroutines / 20, 0.1)))
            self.goroutines.set(key, round(dice.around(process.goroutines)))
            self.threads.set(key, process.threads)
            self.gc_pauses.observe(key, dice.events(process.gc_rate, seconds), dice.latency(0.00008))


class ControlPlaneSimulation:
    """The expositions of a managed control plane whose counters grow with time and with every scrape."""

    def __init__(self, seed: int = 0, *, uptime_seconds: float = 6 * 3600.0) -> None:
        self._dice = Dice(seed)
        self._uptime = uptime_seconds
        self._last: float | None = None
        self._registry = Registry()
        self._scheduler = Scheduler(self._registry)
        self._cloud = CloudControllerManager(self._registry)
        self._apiserver = ApiServer(self._registry)
        self._shared = _Shared(self._registry)
        self._runtime = _Runtime(self._registry)

    def exposition(self, now: float, *, openmetrics: bool = False) -> bytes:
        """The body at Unix time `now`, in OpenMetrics 1.0 if asked, else in the text format 0.0.4.

        A `now` earlier than the last one counts as no time.
        """
        if self._last is None:
            # The first exposition finds the control plane already running for a while, with history.
            started = now - self._uptime
            self._cloud.start(started)
            self._runtime.start(started)
            self._last = started
        seconds = max(now - self._last, 0.0)
        self._last = max(now, self._last)
        self._scheduler.step(self._dice, seconds)
        self._cloud.step(self._dice, seconds, self._last)
        self._apiserver.step(self._dice, seconds, self._last)
        self._shared.step(self._dice, seconds)
        self._runtime.step(self._dice, seconds)
        return self._registry.render(openmetrics)
