"""The candidate service under overload: a bounded queue (503 + Retry-After), caller deadlines
(504, no forward pass), the device client's answer to both, and ``GET /metrics``.

Forward passes are held by a gate the test opens, so "in a forward pass" and "queued" are
states the test waits for, not timings it hopes for; every wait is bounded.
"""

import asyncio
import json
import threading
import time

import httpx
import pytest
import torch
from prometheus_client.parser import text_string_to_metric_families

from conftest import load_benchmark
from recbole_lsc.cloud.service import MicroBatcher, Overloaded
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.config import LSCConfig
from recbole_lsc.deployment.commands import replay_table
from recbole_lsc.deployment.replay import Outcome, ReplayLog, outcome_ranks, replay_report, replay_turns
from recbole_lsc.device.client import CloudUnavailable, DeviceClient
from recbole_lsc.channel import DEADLINE_HEADER
from recbole_lsc.device.http_cloud import Call, HttpCloud
from recbole_lsc.errors import ConfigError
from recbole_lsc.evaluation.metrics import metric_values
from tests.test_deployment import LoopbackServer, always_bundle, app_of, post, world  # noqa: F401 - world: fixture


class GatedCloud(InProcessCloud):
    """A cloud that counts its forward passes and holds each one while its gate is closed."""

    def __init__(self, llm):
        super().__init__(llm, 64, "cpu")
        self.gate, self.entered, self.passes = threading.Event(), threading.Event(), 0
        self.gate.set()

    def candidates(self, item_seq, item_len, k):
        self.passes += 1
        self.entered.set()
        if not self.gate.wait(timeout=20):
            raise TimeoutError("the test never opened the gate")
        return super().candidates(item_seq, item_len, k)


def wait_until(condition, what, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.01)


class Jammed:
    """A service whose worker is busy: one request held in a forward pass by the closed gate
    for the length of a ``with`` block; ``ask`` queues more behind it. On exit the gate opens
    and every request's status lands in ``statuses`` (in the order asked)."""

    def __init__(self, server, cloud, body):
        self.server, self.cloud, self.body = server, cloud, body
        self.batcher = server.server.config.app.state.batcher
        self.threads, self.statuses = [], []

    def ask(self, headers=None):
        """One request in the background; its status is read on exit."""
        index = len(self.threads)
        self.statuses.append(None)

        def call():
            self.statuses[index] = post(self.server.url, self.body, headers=headers or {}).status_code

        self.threads.append(threading.Thread(target=call, daemon=True))
        self.threads[-1].start()

    def wait_queued(self, count):
        wait_until(lambda: self.batcher.depth() == count, f"{count} request(s) queued")

    def __enter__(self):
        self.cloud.gate.clear()
        self.cloud.entered.clear()
        self.ask()
        assert self.cloud.entered.wait(timeout=10), "the first request reached no forward pass"
        return self

    def __exit__(self, *exc):
        self.cloud.gate.set()
        for thread in self.threads:
            thread.join(timeout=30)


@pytest.fixture
def body(world):
    return {"history": [world["tokens"][1], world["tokens"][2]], "k": 3}


def metric_samples(url):
    """``{(sample name, labels as a sorted tuple): value}`` of the service's /metrics page."""
    answer = httpx.get(f"{url}/metrics", timeout=10)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.text) for sample in family.samples}


def test_a_full_queue_is_refused_at_once_with_retry_after_and_the_service_keeps_answering(world, body):
    cloud = GatedCloud(world["llm"])
    with LoopbackServer(app_of(world, cloud=cloud, max_batch=1, max_queue=1)) as server:
        with Jammed(server, cloud, body) as jam:
            jam.ask()
            jam.wait_queued(1)
            started = time.perf_counter()
            refused = post(server.url, body)
            waited = time.perf_counter() - started
            passes_while_full = cloud.passes
        after = post(server.url, body)
    assert refused.status_code == 503 and "overloaded" in refused.json()["error"]
    assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
    assert passes_while_full == 1 and waited < 2.0  # answered while the worker was held: no forward pass
    assert jam.statuses == [200, 200] and after.status_code == 200 and len(after.json()["items"]) == 3


def test_overload_is_shed_before_the_body_is_read_and_the_connection_stays_usable(world, body):
    """A refusal costs no parsing: while the queue is full even a body that is not JSON gets 503
    (idle, it gets 400); the same keep-alive connection then carries a normal request."""
    cloud = GatedCloud(world["llm"])
    garbage = b"{not json" + b" " * 4000
    with LoopbackServer(app_of(world, cloud=cloud, max_batch=1, max_queue=1)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as connection:
            with Jammed(server, cloud, body) as jam:
                jam.ask()
                jam.wait_queued(1)
                shed = connection.post("/candidates", content=garbage)
            wait_until(lambda: jam.batcher.depth() == 0 and not jam.batcher.passing, "the queue drained")
            idle = connection.post("/candidates", content=garbage)
            answered = connection.post("/candidates", json=body)
    assert shed.status_code == 503 and shed.headers["retry-after"].isdigit()
    assert "1 requests wait, at most 1" in shed.json()["error"]
    assert idle.status_code == 400 and answered.status_code == 200 and len(answered.json()["items"]) == 3

def test_retry_after_counts_the_passes_a_full_queue_needs_at_the_recent_pass_time(world):
    batcher = MicroBatcher(InProcessCloud(world["llm"], 64, "cpu"), max_batch=2, max_queue=4)
    assert batcher.retry_after() == 1  # no pass yet: the least Retry-After says
    batcher.queue = asyncio.Queue()
    for _ in range(3):
        batcher.queue.put_nowait(None)
    batcher.recent_pass_s = 2.4
    assert batcher.retry_after() == 8  # the running pass and 2 more for 3 queued, 2 a pass: ceil(3 * 2.4)
    batcher.executor.shutdown()


def test_a_request_whose_deadline_passes_in_the_queue_is_dropped_without_a_forward_pass(world, body):
    cloud = GatedCloud(world["llm"])
    with LoopbackServer(app_of(world, cloud=cloud, max_batch=1, max_queue=4)) as server:
        with Jammed(server, cloud, body) as jam:
            jam.ask(headers={DEADLINE_HEADER: f"{time.time() + 0.5:.3f}"})
            jam.wait_queued(1)
            time.sleep(1.0)  # its deadline passes while the held pass runs
        passes_after_the_jam = cloud.passes
        past = post(server.url, body, headers={DEADLINE_HEADER: f"{time.time() - 1:.3f}"})
        unreadable = post(server.url, body, headers={DEADLINE_HEADER: "soon"})
        health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert jam.statuses == [200, 504] and passes_after_the_jam == 1  # only the held request's pass ran
    assert past.status_code == 504 and DEADLINE_HEADER in past.json()["error"]
    assert unreadable.status_code == 400 and "unix time in seconds" in unreadable.json()["error"]
    assert cloud.passes == 1 and health["expired"] == 2 and health["forward_passes"] == 1


def test_the_device_client_sends_its_deadline_so_a_request_it_gave_up_on_costs_no_pass(world, body):
    cloud = GatedCloud(world["llm"])
    seq = torch.tensor([[1, 2]])
    with LoopbackServer(app_of(world, cloud=cloud, max_batch=1, max_queue=4)) as server:
        remote = HttpCloud(server.url, world["tokens"], timeout=0.3)
        with Jammed(server, cloud, body):
            with pytest.raises(CloudUnavailable):  # timed out on the device
                remote.candidates(seq, torch.tensor([2]), 3)
            assert server.server.config.app.state.batcher.depth() == 1  # still queued in the cloud
        wait_until(lambda: server.server.config.app.state.batcher.depth() == 0, "the queue drained")
        assert post(server.url, body).status_code == 200  # the service's worker is past the dropped request
        remote.close()
    assert cloud.passes == 2  # the held request's and the last one's: none for the request given up on


def test_the_device_serves_its_cached_list_when_the_cloud_sheds_its_request(world, body):
    cloud = GatedCloud(world["llm"])
    turn = replay_turns(world["protocol"])[0]
    with LoopbackServer(app_of(world, cloud=cloud, max_batch=1, max_queue=1)) as server:
        remote = HttpCloud(server.url, world["tokens"], timeout=5.0)
        device = DeviceClient(world["srm"], always_bundle(world), remote)
        assert device.receive(turn.user, turn.stale)
        with Jammed(server, cloud, body) as jam:
            jam.ask()
            jam.wait_queued(1)
            started = time.perf_counter()
            shown = device.recommend(turn.user, turn.fresh)
            waited = time.perf_counter() - started
        remote.close()
    assert shown.requested and not shown.fresh and device.failures == 1 and device.shed == 1
    assert waited < 2.0  # the 503 came at once, not after the 5 s timeout
    assert [(call.ok, call.status) for call in remote.calls] == [(True, 200), (False, 503)]
    cached = DeviceClient(world["srm"], always_bundle(world, always=False), remote)
    cached._cached[turn.user] = device._cached[turn.user]  # the list the device held when the cloud shed it
    expected = cached.recommend(turn.user, turn.fresh)
    assert torch.equal(shown.item_ids, expected.item_ids) and torch.equal(shown.scores, expected.scores)


def test_the_replay_report_counts_shed_calls_apart_from_refusals(world):
    turns = replay_turns(world["protocol"])[:3]
    calls = [Call(0.01, 10, 20, True, 200), Call(0.01, 0, 0, False, 503), Call(0.3, 0, 0, False, 504),
             Call(0.01, 0, 0, False, 422), Call(1.0, 0, 0, False, None)]
    log = ReplayLog([Outcome() for _ in turns], calls, failures=4, seconds=1.0)
    simulation = {"users": [turn.user for turn in turns], "test": [0.0] * len(turns)}
    report = replay_report(world["config"].final_config_dict, log, turns, simulation)
    assert report["shed"] == 2 and report["refused"] == 1 and report["failures"] == 4
    assert "| shed | 2 |" in replay_table(report).splitlines()


def test_metrics_count_what_the_service_answered(world, body):
    cloud = GatedCloud(world["llm"])
    app_of(world, cloud=cloud)  # a second service in this process: registries of their own, no clash
    with LoopbackServer(app_of(world, cloud=cloud, max_batch=1, max_queue=1)) as server:
        for _ in range(2):
            assert post(server.url, body).status_code == 200
        assert post(server.url, {"history": [], "k": 3}).status_code == 422
        with Jammed(server, cloud, body) as jam:
            jam.ask()
            jam.wait_queued(1)
            refused = [post(server.url, body).status_code for _ in range(3)]
            during = metric_samples(server.url)
        samples = metric_samples(server.url)
    assert refused == [503] * 3 and jam.statuses == [200, 200]
    assert during[("lsc_queue_depth", ())] == 1 and samples[("lsc_queue_depth", ())] == 0
    assert samples[("lsc_candidate_requests_total", (("status", "503"),))] == 3
    assert samples[("lsc_candidate_requests_total", (("status", "200"),))] == 4
    assert samples[("lsc_candidate_requests_total", (("status", "422"),))] == 1
    assert samples[("lsc_candidate_request_seconds_count", ())] == 8
    assert samples[("lsc_batch_size_count", ())] == 4 == cloud.passes
    assert samples[("lsc_batch_size_sum", ())] == 4  # max_batch 1: one request a pass
    assert samples[("lsc_forward_pass_seconds_count", ())] == 4


@pytest.mark.parametrize("value, says", [("0", "'serve_max_queue' must be >= 1, got 0"),
                                         ("x", "'serve_max_queue' must be an integer >= 1, got 'x'")])
def test_a_bad_serve_max_queue_is_refused_in_one_line(tiny_config, value, says):
    with pytest.raises(ConfigError) as info:
        LSCConfig("LSC4Rec", "mltiny", config_dict=dict(tiny_config), cmd_args=[f"--serve_max_queue={value}"])
    assert says in str(info.value) and len(str(info.value).splitlines()) == 1
    assert LSCConfig("LSC4Rec", "mltiny", config_dict=dict(tiny_config))["serve_max_queue"] == 64


# ------------------------------------------------------------------ benchmarks/service_overload.py

@pytest.fixture
def overload(monkeypatch):
    return load_benchmark(monkeypatch, "service_overload")


def test_the_benchmark_groups_latency_by_status_with_the_replays_percentiles(overload):
    records = [(200, 0.001 * ms) for ms in range(1, 101)] + [(503, 0.002), ("ConnectError", 1.0)]
    figures = overload.latency_by_status(records)
    assert figures["200"]["count"] == 100 and figures["200"]["latency_ms"]["p50"] == 50.5  # numpy's linear p50
    assert figures["200"]["latency_ms"]["p99"] == 99.01
    assert figures["503"] == {"count": 1, "latency_ms": {"p50": 2.0, "p95": 2.0, "p99": 2.0}}
    assert figures["ConnectError"]["count"] == 1
    assert overload.retry_after_summary(["1", "3", None, "x", "0"]) == {"answers": 5, "valid": 2, "min_s": 1,
                                                                        "max_s": 3}
    assert [overload.retry_seconds(value) for value in ("2", None, "soon")] == [2, 1, 1]
    # never sooner than Retry-After, never later than twice it
    assert [overload.jittered_retry_seconds("2", lambda: share) for share in (0.0, 0.25, 0.999)] == [2.0, 2.5, 3.998]
    assert overload.jittered_retry_seconds(None, lambda: 0.5) == 1.5


def test_the_benchmark_splits_the_cpus_between_the_service_and_its_clients(overload):
    assert overload.split_cpus({0, 1}, "half") == ({0}, {1})
    assert overload.split_cpus({4, 2, 7, 5}, "half") == ({2, 4}, {5, 7})  # the lower ids serve
    assert overload.split_cpus({0, 1, 2, 3}, "3") == ({0, 1, 2}, {3})
    assert overload.split_cpus({0, 1}, "all") == ({0, 1}, {0, 1})
    assert overload.split_cpus({3}, "half") == ({3}, {3})  # one CPU cannot be split
    for count in ("0", "2"):
        with pytest.raises(ValueError, match="must be between 1 and 1 .the clients need at least one of the 2 CPUs"):
            overload.split_cpus({0, 1}, count)
    assert "pinned to CPU 0" in overload.cpu_note({"service": [0], "clients": [1]})
    assert "share" in overload.cpu_note({"service": [0, 1], "clients": [0, 1]})


def test_the_benchmark_compares_metrics_with_what_clients_received(overload):
    samples = {("lsc_candidate_requests_total", (("status", "200"),)): 5.0,
               ("lsc_candidate_requests_total", (("status", "503"),)): 2.0, ("lsc_queue_depth", ()): 0.0}
    assert overload.scraped_by_status(samples) == {"200": 5, "503": 2}
    assert overload.client_by_status([200, 200, 503], [200, None], [200, 503, 200]) == {"200": 5, "503": 2}


def test_cached_users_are_checked_exactly_and_only_they(overload):
    cached = [True, True, False, True]
    assert overload.cached_mismatches([0.5, 0.0, 1.0, 0.3], [0.5, 0.0, 0.0, 0.3], cached) == []  # user 2 asked no cache
    assert overload.cached_mismatches([0.5, 1e-12, 1.0, 0.3], [0.5, 0.0, 1.0, 0.2], cached) == [1, 3]


def passing_figures():
    latency = lambda p50, p99: {"p50": p50, "p95": p99, "p99": p99}  # noqa: E731
    return {"unloaded": {"latency_ms": latency(5.0, 10.0)},
            "flood": {"by_status": {"200": {}, "503": {}},
                      "flood_alone": {"by_status": {"200": {"latency_ms": latency(40.0, 100.0)},
                                                    "503": {"latency_ms": latency(2.0, 9.0)}}},
                      "retry_after": {"answers": 3, "valid": 3}},
            "health_after": {"status": "ok"}, "metrics": {"agrees": True},
            "replay": {"shed": 4, "differing_where_the_cloud_answered": 0, "users": 9, "served": 9,
                       "cached_check": {"users": 4, "mismatches": []}}}


@pytest.mark.parametrize("change, failed", [
    (None, None),
    (lambda f: f["flood"]["flood_alone"]["by_status"]["200"]["latency_ms"].update(p99=100.5),
     "accepted_p99_within_10x_unloaded"),
    (lambda f: f["flood"]["flood_alone"]["by_status"]["503"]["latency_ms"].update(p50=40.0),
     "shed_503_median_below_accepted_median"),
    (lambda f: f["flood"]["by_status"].update({"500": {}}), "only_200_503_504"),
    (lambda f: f["flood"]["retry_after"].update(valid=2), "every_503_has_retry_after"),
    (lambda f: f["replay"].update(shed=0), "replay_shed"),
    (lambda f: f["replay"].update(served=8), "every_replay_user_served"),  # one device never got a list
    (lambda f: f["replay"]["cached_check"].update(mismatches=[7]), "cached_users_score_the_simulations_cached_list"),
    (lambda f: f["metrics"].update(agrees=False), "metrics_count_what_clients_received"),
])
def test_each_done_when_check_fails_on_its_own_condition(overload, change, failed):
    figures = passing_figures()
    if change is not None:
        change(figures)
    checks = overload.done_when(figures)
    assert [name for name, passed in checks.items() if not passed] == ([failed] if failed else [])


def test_the_cached_list_reference_is_what_a_device_shows_from_its_cache(overload, world):
    """The simulation's batch figure for "shown the cached list" equals, user by user, what a
    device client that does not ask (or whose request was shed) shows from its cached list."""
    config, protocol = world["config"], world["protocol"]
    cloud = InProcessCloud(world["llm"], 64, "cpu")
    for catalogue in ("candidates", "full"):
        bundle = always_bundle(world, device_catalogue=catalogue, always=False)
        reference = overload.cached_list_reference(config, world["srm"], bundle, cloud, protocol)
        device = DeviceClient(world["srm"], bundle, cloud)
        turns = replay_turns(protocol)
        outcomes = []
        for turn in turns:
            device.receive(turn.user, turn.stale)
            shown = device.recommend(turn.user, turn.fresh)
            outcomes.append(Outcome(shown.item_ids, shown.scores))
        ranks = outcome_ranks(outcomes, [turn.target for turn in turns], 2 * config["candidate_num"] + 1)
        assert metric_values(ranks, config).tolist() == reference.tolist()


def test_a_histograms_quantile_is_bounded_by_the_buckets_filled_between_two_scrapes(overload):
    def scrape(counts):  # cumulative bucket counts at le = 0.005, 0.01, 0.1, +Inf
        bounds = ("0.005", "0.01", "0.1", "+Inf")
        return {("h_bucket", (("le", le),)): float(count) for le, count in zip(bounds, counts)}

    before, after = scrape([10, 10, 10, 10]), scrape([10, 60, 109, 110])  # between: 50 <= 10 ms, 49 <= 100 ms, 1 over
    assert overload.histogram_quantile_bound(before, after, "h", 0.5) == 10.0
    assert overload.histogram_quantile_bound(before, after, "h", 0.99) == 100.0
    assert overload.histogram_quantile_bound(before, after, "h", 1.0) == float("inf")
    assert overload.histogram_quantile_bound(after, after, "h", 0.5) is None


def test_the_raw_flood_client_encodes_a_request_and_reads_a_response(overload):
    request = overload.http_request("127.0.0.1", 8000, {"history": ["1"], "k": 2})
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /candidates HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n")
    assert f"Content-Length: {len(body)}".encode() in head and json.loads(body) == {"history": ["1"], "k": 2}

    async def read(raw):
        reader = asyncio.StreamReader()
        reader.feed_data(raw)
        reader.feed_eof()
        return await overload.read_response(reader), await reader.read()

    shed = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 5\r\n\r\n{...}NEXT"
    assert asyncio.run(read(shed)) == ((503, {"retry-after": "2", "content-length": "5"}), b"NEXT")


def test_expected_latency_counts_the_running_pass_the_requests_ahead_and_its_own():
    batcher = MicroBatcher(cloud=None, max_batch=4, max_queue=64, max_latency_s=0.25)
    batcher.queue = asyncio.Queue(maxsize=64)  # not started: nothing drains it
    assert batcher.expected_latency() == 0.0  # no pass yet, no estimate: admitted
    batcher.recent_pass_s = 0.1
    assert batcher.expected_latency() == pytest.approx(0.1)  # idle: its own pass
    for _ in range(4):
        batcher.queue.put_nowait(object())
    assert batcher.expected_latency() == pytest.approx(0.2)  # four ahead fill one pass, then its own
    batcher.passing = True
    assert batcher.expected_latency() == pytest.approx(0.3)  # and the pass running first


@pytest.mark.parametrize("bound, refused", [(0.25, True), (0.35, False), (0.0, False)])
def test_a_request_expected_to_wait_past_the_latency_bound_is_refused_before_queueing(bound, refused):
    async def ask():
        batcher = MicroBatcher(cloud=None, max_batch=4, max_queue=64, max_latency_s=bound)
        batcher.queue = asyncio.Queue(maxsize=64)
        batcher.recent_pass_s, batcher.passing = 0.1, True
        for _ in range(4):
            batcher.queue.put_nowait(object())  # expected: 0.3 s
        task = asyncio.ensure_future(batcher.submit([1, 2], 5))
        await asyncio.sleep(0.01)
        outcome = task.exception() if task.done() else None
        task.cancel()
        return outcome, batcher.depth()

    outcome, depth = asyncio.run(ask())
    if refused:
        assert isinstance(outcome, Overloaded) and outcome.retry_after >= 1 and depth == 4
    else:
        assert outcome is None and depth == 5


def test_an_idle_service_admits_whatever_its_last_pass_took():
    """One slow pass must not refuse every later request: with nothing running or queued the
    request is taken, and its pass refreshes the estimate."""
    async def ask():
        batcher = MicroBatcher(cloud=None, max_batch=4, max_queue=64, max_latency_s=0.01)
        batcher.queue = asyncio.Queue(maxsize=64)
        batcher.recent_pass_s = 0.5  # far above the bound
        task = asyncio.ensure_future(batcher.submit([1, 2], 5))
        await asyncio.sleep(0.01)
        admitted = not task.done() and batcher.depth() == 1
        task.cancel()
        return admitted

    assert asyncio.run(ask())
