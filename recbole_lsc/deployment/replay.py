"""``recbole-lsc replay``: the test users of a trained LSC4Rec run replayed through concurrent
device clients against the cloud service, and checked against the simulation.

    recbole-lsc replay --dataset=ml-100k --replay_bundle=<run folder>/device/full [--replay_clients=8]

Each of ``replay_clients`` threads is one device client (:class:`~recbole_lsc.device.client.
DeviceClient` over its own keep-alive :class:`~recbole_lsc.device.http_cloud.HttpCloud`) serving
a shard of the users: first every user's initial list (its stale history, what the cloud has
seen), then each user's fresh history, the policy's decision and, when it asks, the fresh list.
The shown lists are scored like the simulation's, and the per-user ``valid_metric`` is compared
with the one the run stored in the bundle. With ``replay_stop_cloud_after`` the started service
is stopped after that share of users: the devices keep serving their cached lists.
"""

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from recbole_lsc.device.client import DeviceClient
from recbole_lsc.device.http_cloud import HttpCloud
from recbole_lsc.evaluation.metrics import metric_values, summary
from recbole_lsc.evaluation.ranks import list_ranks


@dataclass
class UserTurn:
    """One test user as a device sees it: the history the cloud has seen, the fresh one, the target."""

    user: int
    stale: np.ndarray
    fresh: np.ndarray
    target: int


def replay_turns(protocol):
    """The test users in protocol order (the order of the simulation's per-user vectors)."""
    samples = protocol.samples("test")
    stale_end = protocol.history_end(samples, "stale")
    turns = []
    for user, position, end, target in zip(samples.user, samples.position, stale_end, protocol.targets(samples)):
        sequence = protocol.items[protocol.offsets[user] : protocol.offsets[user] + position]
        turns.append(UserTurn(int(user), sequence[:end], sequence, int(target)))
    return turns


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
    calls: list = field(default_factory=list)  # (seconds, bytes up, bytes down, ok) of every HTTP call
    failures: int = 0
    seconds: float = 0.0


class Replay:
    """Drives ``clients`` device clients over ``turns`` (see the module docstring).

    ``make_cloud()`` returns a fresh HttpCloud per client; ``on_share(share)`` is called once when
    ``stop_after`` of the users have been served (the benchmark stops the service there).
    """

    def __init__(self, srm, bundle, make_cloud, clients, stop_after=None, on_share=None):
        self.srm, self.bundle, self.make_cloud = srm, bundle, make_cloud
        self.clients, self.stop_after, self.on_share = clients, stop_after, on_share
        self._served, self._lock, self._stopped = 0, threading.Lock(), False

    def _served_one(self, total):
        with self._lock:
            self._served += 1
            due = self.stop_after is not None and not self._stopped and self._served >= self.stop_after * total
            self._stopped = self._stopped or due
        if due and self.on_share is not None:
            self.on_share(self.stop_after)

    def _client(self, shard, turns, outcomes, barrier, logs, errors):
        cloud = device = None
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
                    outcomes[index] = Outcome(shown.item_ids, shown.scores, shown.requested, shown.fresh)
                self._served_one(len(turns))
        except threading.BrokenBarrierError:
            pass  # another client failed; its error is raised by run()
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(err)
            barrier.abort()
        finally:
            if cloud is not None:
                cloud.close()
                logs.append((cloud.calls, device.failures if device is not None else 0))

    def run(self, turns):
        outcomes = [Outcome() for _ in turns]
        shards = [list(range(start, len(turns), self.clients)) for start in range(self.clients)]
        barrier, logs, errors = threading.Barrier(self.clients), [], []
        started = time.perf_counter()
        threads = [threading.Thread(target=self._client, args=(shard, turns, outcomes, barrier, logs, errors),
                                    daemon=True) for shard in shards]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        log = ReplayLog(outcomes, seconds=time.perf_counter() - started)
        for calls, failures in logs:
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
