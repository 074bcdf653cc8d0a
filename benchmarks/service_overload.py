"""The cloud service under overload: latency unloaded and flooded, load shed with 503, devices served.

A trained LSC4Rec run folder (``--run DIR``; without it a small one is trained here on the
dataset, in a temporary folder: 2 epochs per stage, one seed, ``device_catalogue: full``,
``request_ratio: 0.5``, no re-training; the service's speed, not the model's quality, is
measured) is served by ``recbole-lsc serve --run`` in a child process (``ServiceProcess``) on
a loopback port, with ``--serve_max_queue``, ``--serve_max_latency_ms`` and ``--serve_threads``. Then:

1. unloaded: one client sends ``--requests`` sequential ``POST /candidates`` with real test
   users' fresh histories (the dataset's item tokens, the newest ``cloud_history`` items, k = C);
2. the run's test users are replayed (``recbole_lsc.deployment.replay.Replay``, ``--replay_clients``
   device processes); their initial lists are fetched unflooded (the flood waits until the
   service has answered all of them, so no device starts without a list), then
3. ``--clients`` concurrent flood clients (``--processes`` processes, each one asyncio loop
   running clients/processes clients, each on its own keep-alive HTTP/1.1 connection over
   asyncio streams with its requests encoded once; no torch in them. ``--client=httpx`` shares
   an ``httpx.AsyncClient`` instead: on a small machine it costs more CPU per request than the
   service, so the load generator, not the service, sets the pace) send requests in a
   closed loop (the next as soon as an answer arrives; after a 503 it waits the answer's
   ``Retry-After`` plus a random share of it, up to twice it, as a well-behaved client does, so that
   the clients refused together do not come back together; or ``--backoff_ms``, exactly: 256 clients then still
   keep the queue full, since at most ``max_queue`` + ``max_batch`` requests are inside) while
   the replay's fresh turns run, for at least ``--duration`` seconds. The service is pinned to
   ``--service_cpus`` of this machine's CPUs and every client to the others (``all``: they share
   them, and client-side latency includes the clients' own wait for a CPU); the
   service's own view (``lsc_candidate_request_seconds`` between a scrape when the flood starts
   and one after it) is reported beside it, as the bucket bounds its p50 and p99 lie under;
4. ``/health`` must answer afterwards, and ``/metrics`` (Prometheus text) must count what the
   clients received.

Done-when checks (exit status 1 when one fails): accepted (200) p99 under load <= 10x the
unloaded p99; 503s answered at once (p99 <= 10x unloaded p99, median below the accepted
median) and each carrying an integer ``Retry-After`` >= 1 (these latencies over the flood's
requests sent after the replay ended: while it runs, its device processes, other machines in
a deployment, take this machine's CPU too; the whole flood's are reported beside them); no status but 200/503/504 and no
connection error; the service healthy afterwards; every replayed device got its initial list (one refused it has
nothing to show); the replay shed > 0 requests and differs
from the simulation only where a call failed; every user whose fresh request failed scores
exactly what the simulation gives a user shown its cached list (:func:`cached_list_reference`);
``/metrics``' requests by status equal the clients' counts.

    python benchmarks/service_overload.py --run results/<run> --clients 256 --max_queue 64
    python benchmarks/service_overload.py                       # trains a small run first (minutes)
    python benchmarks/service_overload.py --table benchmarks/runs/service_overload_ml-100k.json \
        --docs docs/deployment.md

Writes ``benchmarks/runs/service_overload_<dataset>.json`` (``--out``) and the markdown table
next to it (``.md``); ``--table JSON`` only regenerates the table (and, with ``--docs FILE``, the
block between ``<!-- service_overload:begin -->`` and ``<!-- service_overload:end -->`` there).
"""

import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
import numpy as np

from _common import emit, environment, markdown, parse, parser, run, scratch_cwd

from recbole_lsc.channel import SHED_STATUSES
from recbole_lsc.deployment.process import ServiceProcess
from recbole_lsc.deployment.replay import Replay, _percentiles, outcome_ranks, replay_report
from recbole_lsc.deployment.run_folder import load_run
from recbole_lsc.deployment.turns import replay_turns
from recbole_lsc.device.http_cloud import HttpCloud
from recbole_lsc.evaluation.metrics import metric_values
from recbole_lsc.experiment.collaboration import FusedPhase, phase_lists
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.files import write_json_atomic
from recbole_lsc.protocol import DeviceCloudProtocol

HERE = os.path.dirname(os.path.abspath(__file__))
SLOWDOWN_BOUND = 10.0  # accepted p99 under load <= this x unloaded p99 (and the 503s' p99)
TRAIN_KEYS = ["--seeds=1", "--epochs=2", "--llm_epochs=2", "--coop_epochs=1", "--retrain=False",
              "--device_catalogue=full", "--request_ratio=0.5", "--show_progress=False"]
DOCS_BEGIN, DOCS_END = "<!-- service_overload:begin -->", "<!-- service_overload:end -->"

# ------------------------------------------------------------------ pure helpers (tested)


def latency_by_status(records):
    """``{status: {"count", "latency_ms": p50/p95/p99}}`` of ``(status, seconds)`` records; a
    connection error's status is its exception name. Percentiles are the replay report's."""
    seconds = {}
    for status, elapsed in records:
        seconds.setdefault(str(status), []).append(elapsed)
    return {status: {"count": len(values), "latency_ms": _percentiles(values)}
            for status, values in sorted(seconds.items())}


def retry_after_summary(headers):
    """How the 503s' ``Retry-After`` headers look: all must be whole seconds >= 1."""
    valid = [int(value) for value in headers if value is not None and str(value).isdigit() and int(value) >= 1]
    return {"answers": len(headers), "valid": len(valid), "min_s": min(valid, default=None),
            "max_s": max(valid, default=None)}


def cached_mismatches(replay_values, reference, cached):
    """Indices of users served from their cache (``cached`` mask) whose replay metric is not
    exactly the simulation's for the cached list (``reference``)."""
    replay_values, reference = np.asarray(replay_values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    return [int(index) for index in np.flatnonzero(np.asarray(cached, dtype=bool) & (replay_values != reference))]


def split_cpus(available, service_cpus):
    """``(service CPUs, client CPUs)`` of the CPU ids ``available`` (the benchmark's affinity).

    ``service_cpus`` is ``half`` (the lower half, at least one CPU, for the service; the rest
    for every client: the unloaded one, the replay's devices and the flood), ``all`` (no split:
    clients and service share every CPU) or an integer count for the service. A deployment runs
    its devices on other machines: a split keeps the clients' own CPU use out of the service's
    latency. Fewer than two CPUs cannot be split: both get all."""
    cpus = sorted(available)
    if service_cpus == "all" or len(cpus) < 2:
        return set(cpus), set(cpus)
    count = max(1, len(cpus) // 2) if service_cpus == "half" else int(service_cpus)
    if not 1 <= count < len(cpus):
        raise ValueError(f"--service_cpus must be between 1 and {len(cpus) - 1} (the clients need at least one of "
                         f"the {len(cpus)} CPUs); got {count}")
    return set(cpus[:count]), set(cpus[count:])


def retry_seconds(header):
    """The wait a ``Retry-After`` header asks for; 1 s when it is missing or not whole seconds."""
    return int(header) if header is not None and str(header).isdigit() else 1


def jittered_retry_seconds(header, draw=random.random):
    """The wait of a client refused with ``header``: ``Retry-After`` plus ``draw()`` (in [0, 1))
    times it. Clients refused in the same instant would otherwise all return in the same instant
    and meet a full queue again."""
    wait = retry_seconds(header)
    return wait * (1.0 + draw())


def scraped_by_status(samples):
    """``{status: count}`` of ``lsc_candidate_requests_total`` from ``{(name, labels): value}`` samples."""
    return {dict(labels)["status"]: int(value) for (name, labels), value in samples.items()
            if name == "lsc_candidate_requests_total"}


def histogram_quantile_bound(before, after, name, quantile):
    """Milliseconds under which the ``quantile`` of histogram ``name``'s observations between two
    scrapes lie: the least bucket bound whose cumulative count reaches that share (Prometheus
    buckets allow no finer answer); None without observations, inf past the last bound."""
    buckets = sorted((float(dict(labels)["le"]), value - before.get((sample, labels), 0.0))
                     for (sample, labels), value in after.items() if sample == f"{name}_bucket")
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    return next(bound * 1000.0 for bound, count in buckets if count >= quantile * total)


def client_by_status(*status_lists):
    """``{status: count}`` over every client's received statuses (None: no answer, left out)."""
    counts = Counter(str(status) for statuses in status_lists for status in statuses if status is not None)
    return dict(sorted(counts.items()))


def done_when(figures):
    """``{check: bool}`` of the issue's done-when conditions, from the figures alone."""
    unloaded = figures["unloaded"]["latency_ms"]["p99"]
    flood, alone = figures["flood"]["by_status"], figures["flood"]["flood_alone"]["by_status"]
    accepted, shed = alone.get("200", {}).get("latency_ms", {}), alone.get("503", {}).get("latency_ms", {})
    bound = SLOWDOWN_BOUND * unloaded
    replay, retry = figures["replay"], figures["flood"]["retry_after"]
    return {
        "accepted_p99_within_10x_unloaded": accepted.get("p99") is not None and accepted["p99"] <= bound,
        "shed_503_p99_within_10x_unloaded": shed.get("p99") is not None and shed["p99"] <= bound,
        "shed_503_median_below_accepted_median": None not in (shed.get("p50"), accepted.get("p50"))
        and shed["p50"] < accepted["p50"],
        "every_503_has_retry_after": retry["answers"] > 0 and retry["valid"] == retry["answers"],
        "only_200_503_504": set(flood) <= {"200", "503", "504"},
        "healthy_afterwards": figures["health_after"].get("status") == "ok",
        "replay_shed": replay["shed"] > 0,
        "every_replay_user_served": replay["served"] == replay["users"],
        "replay_same_where_the_cloud_answered": replay["differing_where_the_cloud_answered"] == 0,
        "cached_users_score_the_simulations_cached_list": replay["cached_check"]["users"] > 0
        and not replay["cached_check"]["mismatches"],
        "metrics_count_what_clients_received": figures["metrics"]["agrees"],
    }

# ------------------------------------------------------------------ the simulation's reference


def cached_list_reference(config, srm, bundle, cloud, protocol):
    """Each test user's ``valid_metric`` when shown its cached list, as the simulation computes it.

    The simulation scores a user who does not request (or whose request fails) on the stale
    list, i.e. the cloud's list from the history it has seen, re-ranked by the device SRM from
    the fresh history and fused with ``alpha_stale``: ``FusedPhase(...).ranks["stale"]`` of the
    test phase. It is computed here with the simulation's own batch code (``CloudLists`` over
    the run's in-process cloud, ``phase_lists``, ``FusedPhase``) and the bundle's fusion
    weights; the bundle itself stores only the figure under its request policy."""
    lists = CloudLists(cloud, protocol, config)
    test = phase_lists(srm, lists, protocol, "test", config, bundle.device_catalogue)
    fused = FusedPhase(test, {"stale": bundle.alpha_stale, "fresh": bundle.alpha_fresh}, config)
    return np.asarray(metric_values(fused.ranks["stale"], config), dtype=np.float64)

# ------------------------------------------------------------------ the run folder


def train_command(dataset, folder, overrides):
    """The small LSC4Rec run this benchmark trains when no ``--run`` is given (its caches in ``folder``)."""
    exe = shutil.which("recbole-lsc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    command = [exe] if exe else [sys.executable, "-m", "recbole_lsc.cli"]
    return command + ["--model=LSC4Rec", f"--dataset={dataset}", *TRAIN_KEYS,
                      f"--results_dir={os.path.join(folder, 'results')}", "--run_name=run",
                      f"--checkpoint_dir={os.path.join(folder, 'saved')}",
                      f"--trained_llm_cache={os.path.join(folder, 'saved', 'llm_cache')}",
                      f"--trained_srm_cache={os.path.join(folder, 'saved', 'srm_cache')}", *overrides]


def train_run(dataset, folder, overrides):
    """Train the small run in ``folder``; ``(run folder, figures)``."""
    command = train_command(dataset, folder, overrides)
    started = time.perf_counter()
    with open(os.path.join(folder, "train.log"), "w", encoding="utf-8") as log:
        rc = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        raise SystemExit(f"training the run failed (status {rc}); see {os.path.join(folder, 'train.log')}")
    seconds = round(time.perf_counter() - started, 1)
    return os.path.join(folder, "results", "run"), {"command": command, "seconds": seconds}

# ------------------------------------------------------------------ clients


def request_bodies(turns, item_tokens, bundle):
    """One ``/candidates`` body per test user: its fresh history as the device sends it."""
    return [{"history": [item_tokens[item] for item in turn.fresh[-bundle.cloud_history:]], "k": bundle.candidate_num}
            for turn in turns if len(turn.fresh)]


def unloaded(url, bodies, count, warmup=20):
    """``(statuses, seconds)`` of ``count`` sequential requests after ``warmup`` unmeasured ones
    (their statuses are returned too: /metrics counts them)."""
    statuses, seconds = [], []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for index in range(warmup + count):
            started = time.perf_counter()
            status = client.post("/candidates", json=bodies[index % len(bodies)]).status_code
            statuses.append(status)
            if index >= warmup:
                seconds.append(time.perf_counter() - started)
    return statuses, seconds


def http_request(host, port, body):
    """The bytes of one keep-alive ``POST /candidates`` (encoded once: the flood's clients must
    cost less CPU per request than the service they load)."""
    data = json.dumps(body).encode("utf-8")
    head = (f"POST /candidates HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode("ascii") + data


async def read_response(reader):
    """``(status, {lower-case header: value})`` of one HTTP/1.1 response on ``reader``; its body
    (``Content-Length`` bytes) is read and dropped."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])
               if name}
    await reader.readexactly(int(headers.get("content-length", 0)))
    return status, headers


class RawConnection:
    """One keep-alive connection on asyncio streams (TCP_NODELAY), opened again after an error."""

    def __init__(self, host, port):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def post(self, payload):
        """``(status, Retry-After or None)`` of one pre-encoded request."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.writer.write(payload)
            status, headers = await read_response(self.reader)
        except BaseException:
            self.writer.close()
            self.writer = None
            raise
        return status, headers.get("retry-after")


FLOOD_ERRORS = (httpx.HTTPError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)


async def _flood_client(send, first, step, stop, backoff_s):
    """One closed-loop client: ``[(status, seconds, Retry-After)]`` until ``stop`` is set;
    ``send(index)`` sends request ``index`` and returns ``(status, Retry-After)``."""
    records, index = [], first
    while not stop.is_set():
        started, retry, at = time.perf_counter(), None, time.time()
        try:
            status, retry = await send(index)
        except FLOOD_ERRORS as err:
            status = type(err).__name__
        records.append((status, time.perf_counter() - started, retry, at))
        index += step
        if status == 503:
            await asyncio.sleep(backoff_s if backoff_s is not None else jittered_retry_seconds(retry))
    return records


def raw_senders(url, bodies, connections):
    """One ``send(index)`` per client, each on its own raw keep-alive connection."""
    address = urlsplit(url)
    payloads = [http_request(address.hostname, address.port, body) for body in bodies]

    def sender():
        connection = RawConnection(address.hostname, address.port)
        return lambda index: connection.post(payloads[index % len(payloads)])

    return [sender() for _ in range(connections)], None


def httpx_senders(url, bodies, connections):
    """``send(index)`` for each client over one shared ``httpx.AsyncClient`` (its pool)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    client = httpx.AsyncClient(base_url=url, limits=limits, timeout=120.0)

    async def send(index):
        answer = await client.post("/candidates", json=bodies[index % len(bodies)])
        return answer.status_code, answer.headers.get("retry-after")

    return [send] * connections, client


async def _flood(kind, url, bodies, connections, offset, step, go, stop, backoff_s):
    senders, client = (raw_senders if kind == "raw" else httpx_senders)(url, bodies, connections)
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    try:
        done = await asyncio.gather(*(_flood_client(send, offset + i, step, stop, backoff_s)
                                      for i, send in enumerate(senders)))
    finally:
        if client is not None:
            await client.aclose()
    return [record for records in done for record in records]


def flood_process(kind, url, bodies, connections, offset, step, go, stop, backoff_s, results):
    """A flood process (forked: no torch work in it): ``connections`` concurrent clients."""
    try:
        results.put(("done", asyncio.run(_flood(kind, url, bodies, connections, offset, step, go, stop,
                                                backoff_s))))
    except BaseException as err:  # noqa: BLE001 - reported to the benchmark
        results.put(("error", f"{type(err).__name__}: {err}"))


def coordinator(url, trigger, go, go_time, stop, samples, trigger_timeout=600.0):
    """Releases the flood once the service has answered ``trigger`` requests in all (whatever
    their status: the replay's initial lists are then out), then samples ``/health``'s queue
    depth every 0.2 s until ``stop``."""
    deadline = time.monotonic() + trigger_timeout
    while answered_total(url) < trigger and time.monotonic() < deadline:
        time.sleep(0.01)
    base = scrape(url)  # the service's latency histogram before the flood
    go_time.value = time.time()
    go.set()
    depths = []
    with httpx.Client(base_url=url, timeout=30.0) as client:
        while not stop.wait(0.2):
            depths.append(client.get("/health").json()["queued"])
    samples.put((depths, base))


def answered_total(url):
    """``POST /candidates`` answers so far, every status (``lsc_candidate_requests_total``)."""
    return sum(scraped_by_status(scrape(url)).values())


# ------------------------------------------------------------------ /metrics


def scrape(url):
    """``{(sample name, labels as a sorted tuple): value}`` of the service's /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def metrics_figures(samples, clients):
    """What /metrics says after the run, and whether it counts what the clients received."""
    def value(name):
        return samples.get((name, ()), 0.0)

    by_status = scraped_by_status(samples)
    passes = value("lsc_batch_size_count")
    per_pass = (lambda total: round(total / passes, 3)) if passes else (lambda total: None)  # noqa: E731
    return {"requests_by_status": by_status, "clients_by_status": clients, "agrees": by_status == clients,
            "queue_depth_after": value("lsc_queue_depth"), "forward_passes": int(passes),
            "batch_size_mean": per_pass(value("lsc_batch_size_sum")),
            "forward_seconds_mean_ms": per_pass(1000 * value("lsc_forward_pass_seconds_sum")),
            "forward_seconds_total": round(value("lsc_forward_pass_seconds_sum"), 3),
            "request_seconds_count": int(value("lsc_candidate_request_seconds_count"))}

# ------------------------------------------------------------------ the measurement


def start_flood(context, url, bodies, args):
    """Fork the flood processes and the coordinator; they wait for the trigger."""
    per = args.clients // args.processes
    go, stop, results, samples = context.Event(), context.Event(), context.Queue(), context.Queue()
    go_time = context.Value("d", 0.0)
    workers = [context.Process(target=flood_process, daemon=True,
                               args=(args.client, url, bodies, per + (p < args.clients % args.processes), p * per,
                                     args.clients,
                                     go, stop, None if args.backoff_ms is None else args.backoff_ms / 1000.0, results))
               for p in range(args.processes)]
    return workers, go, go_time, stop, results, samples


def collect_flood(workers, results, count):
    """Every flood record; a flood process that failed stops the benchmark."""
    records = []
    for _ in range(count):
        kind, payload = results.get(timeout=300)
        if kind == "error":
            raise RuntimeError(f"a flood process failed: {payload}")
        records += payload
    for worker in workers:
        worker.join(timeout=30)
    return records


def replay_figures(config, log, turns, bundle, reference):
    """The replay's report, plus the per-user check of the users served from their cache."""
    report = replay_report(config, log, turns, bundle.simulation)
    values = metric_values(outcome_ranks(log.outcomes, [t.target for t in turns], 2 * config["candidate_num"] + 1),
                           config)
    requested = np.array([o.requested for o in log.outcomes])
    cached = requested & ~np.array([o.fresh for o in log.outcomes])
    asked_not = ~requested & np.array([o.item_ids is not None for o in log.outcomes])
    report["cached_check"] = {
        "users": int(cached.sum()), "mismatches": cached_mismatches(values, reference, cached),
        # the reference itself: users who never asked are scored on the cached list by the simulation too
        "not_requesting_users": int(asked_not.sum()),
        "reference_equals_simulation_where_not_requesting": bool(
            np.array_equal(reference[asked_not], np.asarray(bundle.simulation["test"])[asked_not]))}
    report["statuses"] = client_by_status([call.status for call in log.calls])
    return report


def measure(args, run_dir):
    """Everything but the output: ``figures`` (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    config, dataset, cloud, devices = load_run(run_dir, replay_clients=args.replay_clients,
                                               request_timeout=args.request_timeout)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    srm, bundle = next(iter(devices.values()))
    turns, item_tokens = replay_turns(protocol), list(dataset.field2id_token[dataset.iid_field])
    reference = cached_list_reference(config, srm, bundle, cloud, protocol)
    bodies = request_bodies(turns, item_tokens, bundle)
    service_args = [f"--run={os.path.abspath(run_dir)}", f"--serve_max_queue={args.max_queue}",
                    f"--serve_max_batch={args.max_batch}", f"--serve_max_latency_ms={args.max_latency_ms}",
                    f"--serve_threads={args.serve_threads}", "--state=ERROR"]
    figures = {"service": {"args": service_args}, "loadavg_before": _loadavg()}
    service_cpus, client_cpus = args.cpu_split
    figures["cpus"] = {"service": sorted(service_cpus), "clients": sorted(client_cpus)}
    with pinned_service(service_args, service_cpus, client_cpus) as service:
        warm_statuses, seconds = unloaded(service.url, bodies, args.requests)
        figures["unloaded"] = {"requests": len(seconds), "statuses": client_by_status(warm_statuses[-len(seconds):]),
                               "latency_ms": _percentiles(seconds)}
        trigger = answered_total(service.url) + len(turns)
        flood, log, samples, mid = _flood_and_replay(service.url, bodies, args, config, srm, bundle, item_tokens,
                                                     turns, trigger)
        health = httpx.get(f"{service.url}/health", timeout=30).json()
        scraped = scrape(service.url)
    figures["loadavg_after"] = _loadavg()
    figures["flood"] = flood
    figures["replay"] = replay_figures(config, log, turns, bundle, reference)
    figures["health_after"] = health
    clients = client_by_status(warm_statuses, flood.pop("statuses"), [call.status for call in log.calls])
    figures["metrics"] = {**metrics_figures(scraped, clients), "queue_depth_during_flood": samples,
                          "queue_depth_gauge_mid_flood": mid}
    figures["service"].update(max_queue=health["max_queue"], serve_threads=args.serve_threads,
                              max_batch=args.max_batch)
    return figures


def cpu_note(cpus):
    """How the measurement shared the CPUs, in words (the table's first line)."""
    if cpus["service"] == cpus["clients"]:
        return "the flood's clients and the replay's devices share this machine's CPUs with the service"
    return (f"the service is pinned to CPU {_ids(cpus['service'])} and every client (the unloaded one, the "
            f"replay's devices, the flood) to CPU {_ids(cpus['clients'])}, as devices run on other machines")


def _ids(cpus):
    return ", ".join(map(str, cpus))


@contextlib.contextmanager
def pinned_service(service_args, service_cpus, client_cpus):
    """The service started on ``service_cpus`` (its process inherits this one's affinity at the
    fork); then this process, and every client it forks afterwards, moves to ``client_cpus``."""
    os.sched_setaffinity(0, service_cpus)
    try:
        service = ServiceProcess(service_args).start()
    finally:
        os.sched_setaffinity(0, client_cpus)
    try:
        yield service
    finally:
        service.stop()


def _flood_and_replay(url, bodies, args, config, srm, bundle, item_tokens, turns, trigger):
    """The replay (main process, forks its device clients) with the flood released once its
    initial lists are answered; ``(flood figures, replay log, queue depths, mid-flood gauge)``."""
    context = multiprocessing.get_context("fork")
    workers, go, go_time, stop, results, samples = start_flood(context, url, bodies, args)
    watcher = context.Process(target=coordinator, args=(url, trigger, go, go_time, stop, samples), daemon=True)
    for process in (*workers, watcher):
        process.start()  # forked before the replay's clients: no thread runs in this process at a fork
    make_cloud = lambda: HttpCloud(url, item_tokens, timeout=config["request_timeout"])  # noqa: E731
    log = Replay(srm, bundle, make_cloud, config["replay_clients"]).run(turns)
    replay_end = time.time()
    go.wait()
    time.sleep(max(0.0, go_time.value + args.duration - time.time()))
    mid = scrape(url).get(("lsc_queue_depth", ()))  # one scrape while still flooded
    stop.set()
    records = collect_flood(workers, results, len(workers))
    flood_seconds = time.time() - go_time.value
    depths, base = samples.get(timeout=60)
    watcher.join(timeout=30)
    figures = flood_figures(records, args, flood_seconds, replay_end)
    figures["replay_fresh_turns_after_the_flood_started_s"] = round(replay_end - go_time.value, 2)
    after = scrape(url)
    figures["service_side_latency_ms_at_most"] = service_side_latency(base, after)
    figures["service_during_flood"] = service_during(base, after, flood_seconds)
    depth_summary = {"samples": len(depths), "max": max(depths, default=None),
                     "median": float(np.median(depths)) if depths else None}
    return figures, log, depth_summary, mid


def flood_figures(records, args, seconds, replay_end):
    """The flood's figures from its ``(status, seconds, Retry-After, unix start)`` records,
    also for the requests sent after the replay ended (``flood_alone``: the replay's device
    processes, other machines in a deployment, no longer take this machine's CPU); ``statuses``
    is popped by the caller: it only feeds the /metrics comparison."""
    alone = [record for record in records if record[3] >= replay_end]
    return {"clients": args.clients, "processes": args.processes, "client": args.client,
            "backoff_after_503": "Retry-After" if args.backoff_ms is None else f"{args.backoff_ms} ms",
            "seconds": round(seconds, 2), "requests": len(records), "requests_per_s": round(len(records) / seconds, 1),
            "by_status": latency_by_status([record[:2] for record in records]),
            "flood_alone": {"requests": len(alone), "by_status": latency_by_status([record[:2] for record in alone])},
            "retry_after": retry_after_summary([record[2] for record in records if record[0] == 503]),
            "statuses": [record[0] for record in records]}


def service_during(before, after, seconds):
    """The service's passes between two scrapes: how many, their mean batch and time, and the
    accepted answers a second (what drains a full queue: a request that finds ``depth`` ahead
    of it waits about ``depth / answered_per_s``)."""
    def delta(name, labels=()):
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    passes = delta("lsc_batch_size_count")
    return {"forward_passes": int(passes),
            "batch_size_mean": round(delta("lsc_batch_size_sum") / passes, 2) if passes else None,
            "forward_pass_ms_mean": round(1000 * delta("lsc_forward_pass_seconds_sum") / passes, 2) if passes else None,
            "answered_200_per_s": round(delta("lsc_candidate_requests_total", (("status", "200"),)) / seconds, 1)}


def service_side_latency(before, after):
    """The service's own p50/p99 bounds (ms) between two scrapes: arrival to answer, every status."""
    return {f"p{q}": _json_number(histogram_quantile_bound(before, after, "lsc_candidate_request_seconds", q / 100))
            for q in (50, 99)}


def _json_number(value):
    """``value``, or the string "inf" (JSON has no infinity)."""
    return "inf" if value is not None and not np.isfinite(value) else value


def _loadavg():
    with open("/proc/loadavg", encoding="ascii") as handle:
        return handle.read().strip()

# ------------------------------------------------------------------ output


def table_lines(figures):
    """The markdown table of a measurement (what ``--table`` regenerates from the JSON)."""
    flood, replay, metrics = figures["flood"], figures["replay"], figures["metrics"]
    rows = [("unloaded latency ms p50 / p95 / p99 (1 client, sequential)", _ms(figures["unloaded"]["latency_ms"]))]
    for window, title in (("by_status", "whole flood"), ("flood_alone", "flood alone, after the replay")):
        by_status = flood[window] if window == "by_status" else flood[window]["by_status"]
        rows += [(f"{title}, {status}: answers, latency ms p50 / p95 / p99",
                  f"{entry['count']}, {_ms(entry['latency_ms'])}") for status, entry in by_status.items()]
    retry = flood["retry_after"]
    rows += [
        ("service side during the flood (all statuses): p50 / p99 at most ms",
         " / ".join(str(flood["service_side_latency_ms_at_most"][key]) for key in ("p50", "p99"))),
        ("flood: clients, processes, client, wait after a 503, seconds, requests/s",
         f"{flood['clients']}, {flood['processes']}, {flood.get('client', 'httpx')}, {flood['backoff_after_503']}, "
         f"{flood['seconds']}, {flood['requests_per_s']}"),
        ("503 Retry-After: valid / answers, min-max s", f"{retry['valid']} / {retry['answers']}, "
                                                         f"{retry['min_s']}-{retry['max_s']}"),
        ("queue depth (/health every 0.2 s): median, max", f"{metrics['queue_depth_during_flood']['median']}, "
                                                           f"{metrics['queue_depth_during_flood']['max']}"),
        ("replay: users, served, requests asked / answered, shed, failures",
         f"{replay['users']}, {replay['served']}, {replay['requests']['asked']} / {replay['requests']['answered']}, "
         f"{replay['shed']}, {replay['failures']}"),
        ("replay: differing where the cloud answered", replay["differing_where_the_cloud_answered"]),
        ("replay: users served from cache, mismatches with the simulation's cached list",
         f"{replay['cached_check']['users']}, {len(replay['cached_check']['mismatches'])}"),
        ("/metrics requests by status (= clients)", f"{_counts(metrics['requests_by_status'])} "
                                                    f"({'equal' if metrics['agrees'] else 'DIFFERENT'})"),
        ("/metrics during the flood: passes, mean batch, mean pass ms, 200s a second",
         ", ".join(str(flood["service_during_flood"][key]) for key in
                   ("forward_passes", "batch_size_mean", "forward_pass_ms_mean", "answered_200_per_s"))),
        ("/metrics whole run: forward passes, mean batch, mean pass ms",
         f"{metrics['forward_passes']}, {metrics['batch_size_mean']}, {metrics['forward_seconds_mean_ms']}"),
        ("/proc/loadavg before / after", f"{figures['loadavg_before']} / {figures['loadavg_after']}"),
    ]
    lines = [f"Service under overload on {figures['dataset']} (`{figures['command']}`); {figures['note']}", ""]
    lines += markdown(["figure", "value"], rows)
    lines += ["", *markdown(["done-when check", "passed"], sorted(figures["checks"].items()))]
    return lines


def _ms(latency):
    return " / ".join("-" if latency[key] is None else f"{latency[key]:.1f}" for key in ("p50", "p95", "p99"))


def _counts(counts):
    return ", ".join(f"{status}: {count}" for status, count in counts.items())


def write_docs(path, lines):
    """Replace the marked block of ``path`` with the table (the docs show the measured run)."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    head, found, rest = text.partition(DOCS_BEGIN)
    if not found or DOCS_END not in rest:
        raise SystemExit(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} block")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(head + DOCS_BEGIN + "\n" + "\n".join(lines) + "\n" + DOCS_END + rest.partition(DOCS_END)[2])


def write_table(json_path, docs=None):
    """The ``.md`` next to ``json_path`` (and the docs block) from the JSON figures; the checks
    are computed again from the figures (a check added since the run applies to it)."""
    with open(json_path, encoding="utf-8") as handle:
        figures = json.load(handle)
    figures["checks"] = done_when(figures)
    figures["passed"] = all(figures["checks"].values())
    write_json_atomic(json_path, figures)
    lines = table_lines(figures)
    with open(os.path.splitext(json_path)[0] + ".md", "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    if docs:
        write_docs(docs, lines)
    return lines


def arguments(argv):
    p = parser(__doc__, users=None)
    p.add_argument("--run", default=None, help="a trained LSC4Rec run folder (default: train a small one here)")
    p.add_argument("--clients", type=int, default=256, help="concurrent flood clients (%(default)s)")
    p.add_argument("--client", choices=("raw", "httpx"), default="raw",
                   help="flood client: keep-alive HTTP/1.1 on asyncio streams, requests encoded once (raw), or "
                        "httpx.AsyncClient, which on this machine costs more CPU per request than the service "
                        "(default %(default)s)")
    p.add_argument("--processes", type=int, default=2, help="flood processes the clients share (%(default)s)")
    p.add_argument("--max_queue", type=int, default=64, help="--serve_max_queue of the service (%(default)s)")
    p.add_argument("--max_batch", type=int, default=64, help="--serve_max_batch of the service (%(default)s)")
    p.add_argument("--max_latency_ms", type=int, default=25,
                   help="--serve_max_latency_ms of the service: 503 for a request expected to wait longer "
                        "(0: bounded by the queue alone, when every pass grows to a whole --max_batch) "
                        "(%(default)s)")
    p.add_argument("--serve_threads", type=int, default=1, help="torch threads of the service (%(default)s)")
    p.add_argument("--service_cpus", default="half",
                   help="CPUs pinned to the service, the rest to the clients: half, all (no split) or a count "
                        "(default %(default)s)")
    p.add_argument("--requests", type=int, default=300, help="sequential unloaded requests (%(default)s)")
    p.add_argument("--duration", type=float, default=45.0, help="least flood seconds (%(default)s)")
    p.add_argument("--backoff_ms", type=float, default=None,
                   help="a flood client's pause after a 503 (default: the 503's Retry-After, as a client should)")
    p.add_argument("--replay_clients", type=int, default=8, help="device processes of the replay (%(default)s)")
    p.add_argument("--request_timeout", type=float, default=5.0, help="the replay devices' timeout (%(default)s)")
    p.add_argument("--table", default=None, help="only regenerate the markdown table from this JSON")
    p.add_argument("--docs", default=None, help="with --table: also replace the marked block of this file")
    args, overrides = parse(p, argv)
    if args.processes < 1 or args.clients < args.processes:
        p.error("--clients must be >= --processes >= 1")
    if args.service_cpus not in ("half", "all") and not args.service_cpus.isdigit():
        p.error("--service_cpus must be half, all or a whole number of CPUs")
    try:  # before anything is trained
        args.cpu_split = split_cpus(os.sched_getaffinity(0), args.service_cpus)
    except ValueError as err:
        p.error(str(err))
    return args, overrides


def main(argv=None):
    args, overrides = arguments(argv)
    if args.table:
        print("\n".join(write_table(os.path.abspath(args.table), args.docs)))
        return 0
    out = args.out or os.path.join(HERE, "runs", f"service_overload_{args.dataset}.json")
    docs, run_dir, trained = args.docs and os.path.abspath(args.docs), args.run and os.path.abspath(args.run), None
    with scratch_cwd() as folder:  # the service's and the training's side files (log/, saved/) land there
        if run_dir is None:
            run_dir, trained = train_run(args.dataset, folder, overrides)
        started = time.perf_counter()
        figures = measure(args, run_dir)
        figures["measure_seconds"] = round(time.perf_counter() - started, 1)
    figures.update(benchmark="service_overload", dataset=args.dataset, run=args.run or "trained here", trained=trained,
                   command=" ".join(["python benchmarks/service_overload.py", *(argv or sys.argv[1:])]),
                   machine=environment("cpu"),
                   note=f"the service's speed is measured, not the model's quality; {cpu_note(figures['cpus'])} "
                        "(other jobs: see /proc/loadavg)")
    figures["checks"] = done_when(figures)
    figures["passed"] = all(figures["checks"].values())
    write_json_atomic(out, figures)
    emit(figures, write_table(out, docs))
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(run(main))
