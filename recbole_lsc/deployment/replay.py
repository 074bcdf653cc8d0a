"""``recbole-lsc replay``: the test users of a trained LSC4Rec run replayed through concurrent
device clients against the cloud service, and checked against the simulation.

    recbole-lsc replay --dataset=ml-100k --replay_bundle=<run folder>/device/full [--replay_clients=8]

Each of ``replay_clients`` processes is one device client (:class:`~recbole_lsc.device.client.
DeviceClient` over its own keep-alive :class:`~recbole_lsc.device.http_cloud.HttpCloud`) serving
a shard of the users: first every user's initial list (its stale history, what the cloud has
seen), then each user's fresh history, the policy's decision and, when it asks, the fresh list.
The shown lists are scored like the simulation's, and the per-user ``valid_metric`` is compared
with the one the run stored in the bundle. With ``replay_stop_cloud_after`` the started service
is stopped after that share of users: the devices keep serving their cached lists.
"""

import multiprocessing
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recbole_lsc.channel import SHED_STATUSES
from recbole_lsc.deployment.turns import UserTurn, replay_turns  # noqa: F401  (re-exported)
from recbole_lsc.device.client import DeviceClient
from recbole_lsc.device.http_cloud import HttpCloud
from recbole_lsc.evaluation.metrics import metric_values, summary
from recbole_lsc.evaluation.ranks import list_ranks


@dataclass
class Outcome:
    """What one user ended with."""

    item_ids: torch.Tensor = None  # [1, M], None when no list ever arrived
    scores: torch.Tensor = None
    requested: bool = False
    fresh: bool = False


@dataclass
class ReplayLog:
    outcomes: list
    calls: list = field(default_factory=list)  # (seconds, bytes up, bytes down, ok, status) of every HTTP call
    failures: int = 0
    seconds: float = 0.0


class Replay:
    """Drives ``clients`` device clients over ``turns`` (see the module docstring).

    Each client is its own process (forked from this one, one torch thread), as devices are
    separate machines: no client waits for another's interpreter lock, so a call's latency is
    the cloud's and the network's, not the replaying process's. ``make_cloud()`` returns a fresh
    HttpCloud per client (called in the client's process); ``on_share(share)`` is called here once
    ``stop_after`` of the users have been served (the benchmark stops the service there).
    """

    def __init__(self, srm, bundle, make_cloud, clients, stop_after=None, on_share=None):
        self.srm, self.bundle, self.make_cloud = srm, bundle, make_cloud
        self.clients, self.stop_after, self.on_share = clients, stop_after, on_share

    def _client(self, shard, turns, barrier, served, share_done, results):
        """One device process: initial lists, the barrier, then each user's turn; reports
        ``("done", outcomes, calls, failures)`` or ``("error", message)`` on ``results``."""
        torch.set_num_threads(1)
        cloud = device = None
        outcomes = []
        try:
            cloud = self.make_cloud()
            device = DeviceClient(self.srm, self.bundle, cloud)
            for index in shard:
                device.receive(turns[index].user, turns[index].stale)
            barrier.wait()  # every initial list is out before the first fresh history arrives
            for index in shard:
                turn = turns[index]
                if device.has_list(turn.user):
                    shown = device.recommend(turn.user, turn.fresh)
                    outcomes.append((index, shown.item_ids.numpy(), shown.scores.numpy(), shown.requested,
                                     shown.fresh))
                with served.get_lock():
                    served.value += 1
                    due = self._share_due(served.value, len(turns))
                if due:  # the outage starts here: wait until the replaying process has acted on it
                    share_done.wait(timeout=60)
            results.put(("done", outcomes, list(cloud.calls), device.failures))
        except threading.BrokenBarrierError:
            results.put(("error", None))  # another client failed; its message is reported
        except BaseException as err:  # noqa: BLE001 - reported to the replaying process
            barrier.abort()
            results.put(("error", f"{type(err).__name__}: {err}"))
        finally:
            if cloud is not None:
                cloud.close()

    def _share_due(self, served, total):
        return self.stop_after is not None and served >= self.stop_after * total

    def run(self, turns):
        context = multiprocessing.get_context("fork")
        shards = [list(range(start, len(turns), self.clients)) for start in range(self.clients)]
        barrier, served, results = context.Barrier(self.clients), context.Value("i", 0), context.Queue()
        share_done = context.Event()
        started = time.perf_counter()
        workers = [context.Process(target=self._client, args=(shard, turns, barrier, served, share_done, results),
                                   daemon=True) for shard in shards]
        for worker in workers:
            worker.start()
        reports, stopped = [], False
        while len(reports) < len(workers):
            if not stopped and self._share_due(served.value, len(turns)):
                stopped = True
                if self.on_share is not None:
                    self.on_share(self.stop_after)
                share_done.set()
            try:
                reports.append(results.get(timeout=0.01))
            except queue.Empty:
                if not any(worker.is_alive() for worker in workers) and results.empty():
                    raise RuntimeError("a device client process died without reporting") from None
        for worker in workers:
            worker.join()
        failed = [report for report in reports if report[0] == "error"]
        if failed:  # a client that only saw the barrier break reports None: name the one that broke it
            message = next((report[1] for report in failed if report[1]), "unknown error")
            raise RuntimeError(f"a device client failed: {message}")
        log = ReplayLog([Outcome() for _ in turns], seconds=time.perf_counter() - started)
        for _, outcomes, calls, failures in reports:
            for index, item_ids, scores, requested, fresh in outcomes:
                log.outcomes[index] = Outcome(torch.from_numpy(item_ids), torch.from_numpy(scores), requested, fresh)
            log.calls += calls
            log.failures += failures
        return log


def outcome_ranks(outcomes, targets, width):
    """Target ranks in each user's shown list (``width`` = not found, also when no list arrived)."""
    ranks = torch.full((len(outcomes),), width, dtype=torch.long)
    for index, outcome in enumerate(outcomes):
        if outcome.item_ids is not None:
            ranks[index] = list_ranks(outcome.item_ids, outcome.scores, torch.tensor([targets[index]]))[0]
    return ranks


def _percentiles(values):
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    ms = np.asarray(values) * 1000.0
    return {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def replay_report(config, log, turns, simulation):
    """The replay's figures: metrics, the identity check, requests, bytes, latency, failures."""
    targets = [turn.target for turn in turns]
    ranks = outcome_ranks(log.outcomes, targets, 2 * config["candidate_num"] + 1)
    per_user = metric_values(ranks, config)
    expected = np.asarray(simulation["test"], dtype=np.float64)
    same_users = simulation["users"] == [turn.user for turn in turns]
    differs = np.flatnonzero(per_user != expected) if same_users else np.arange(len(turns))
    ok = [call for call in log.calls if call.ok]
    requested = np.array([outcome.requested for outcome in log.outcomes])
    fresh = np.array([outcome.fresh for outcome in log.outcomes])
    cached = requested & ~fresh  # asked, but served the cached list
    affected = cached | np.array([outcome.item_ids is None for outcome in log.outcomes])  # a failed call changed them
    report = {
        "users": len(turns), "served": int(sum(o.item_ids is not None for o in log.outcomes)),
        "test": summary(ranks, config),
        "identical_to_simulation": bool(same_users and len(differs) == 0),
        "users_differing": int(len(differs)),
        "max_abs_difference": float(np.abs(per_user - expected).max()) if same_users and len(turns) else None,
        "requests": {"asked": int(requested.sum()), "answered": int(fresh.sum()), "ratio": round(float(requested.mean()), 6)},
        "http_calls": len(log.calls), "failures": log.failures,
        "refused": sum(1 for c in log.calls if c.status is not None and 400 <= c.status < 500),
        "shed": sum(1 for c in log.calls if c.status in SHED_STATUSES),  # overload: failures, not refusals
        "differing_where_the_cloud_answered": int(len(np.setdiff1d(differs, np.flatnonzero(affected)))),
        "bytes_per_call": {"up": round(float(np.mean([c.bytes_up for c in ok])), 1) if ok else None,
                           "down": round(float(np.mean([c.bytes_down for c in ok])), 1) if ok else None},
        "latency_ms": _percentiles([c.seconds for c in ok]),
        "seconds": round(log.seconds, 3),
        "throughput": {"calls_per_s": round(len(log.calls) / log.seconds, 1) if log.seconds else None,
                       "users_per_s": round(len(turns) / log.seconds, 1) if log.seconds else None},
    }
    if cached.any():
        report["served_from_cache_after_failed_request"] = {
            "users": int(cached.sum()), config["valid_metric"].lower(): round(float(per_user[cached].mean()), 6),
            "simulation": round(float(expected[cached].mean()), 6) if same_users else None}
    return report


def run_replay(srm, bundle, item_tokens, turns, config, url, token=None, on_share=None):
    """Replay ``turns`` against the service at ``url`` (items as ``item_tokens``); returns the report."""
    make_cloud = lambda: HttpCloud(url, item_tokens, timeout=config["request_timeout"], token=token)  # noqa: E731
    replay = Replay(srm, bundle, make_cloud, config["replay_clients"], config["replay_stop_cloud_after"], on_share)
    return replay_report(config, replay.run(turns), turns, bundle.simulation)
