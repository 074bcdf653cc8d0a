"""``recbole-lsc recommend``: what a finished run's LSC4Rec device shows, for users of the dataset
or for a history given by hand, with where each item came from and its fused score.

    recbole-lsc recommend --run=<run folder> --user=196,186 [--k=10] [--setting=full]
    recbole-lsc recommend --run=<run folder> --history=242,302,377 [--k=10]

The answer is the device client's own (:class:`~recbole_lsc.device.client.DeviceClient` over the
run's cloud in this process): the cloud's list for the history it has seen, then the device's
re-ranking, fusion and request decision for the fresh history, exactly as a deployed device
computes them. A known user is answered at its test turn (the histories the run's simulation
scored); a hand-given history is both what the cloud sees and the fresh history.
"""

import argparse
from dataclasses import dataclass

import numpy as np
import torch

from recbole_lsc.deployment.run_folder import load_run
from recbole_lsc.deployment.turns import replay_turns
from recbole_lsc.device.client import DeviceClient
from recbole_lsc.device.inference import shown_positions
from recbole_lsc.errors import ConfigError
from recbole_lsc.protocol import DeviceCloudProtocol

# A hand-given history belongs to no user of the dataset: RecBole's padding user, whose device
# keeps the SRM the cloud sent (no per-device weights are stored for it).
PAD_USER = 0


@dataclass
class Query:
    """One list to compute: ``label`` (the user token, or ``history``), the device's user id,
    the history the cloud has seen and the fresh one (item ids, oldest first)."""

    label: str
    user: int
    stale: np.ndarray
    fresh: np.ndarray


def user_queries(dataset, protocol, users):
    """The test turns of ``users`` (tokens); refuses a user the dataset or its test split lacks."""
    turns = {turn.user: turn for turn in replay_turns(protocol)}
    queries = []
    for token in users:
        user = dataset.field2token_id[dataset.uid_field].get(str(token))
        if user is None:
            raise ConfigError(f"unknown user '{token}': not a user of dataset '{dataset.dataset_name}'")
        if user not in turns:
            raise ConfigError(f"user '{token}' has no test turn in dataset '{dataset.dataset_name}' (too short a "
                              "history); pass --history=<item tokens> instead")
        queries.append(Query(str(token), user, turns[user].stale, turns[user].fresh))
    return queries


def history_query(dataset, tokens):
    """A hand-given history (item tokens, oldest first); refuses an empty one or unknown items."""
    if not tokens:
        raise ConfigError("empty history: pass --history=<item token>,<item token>,...")
    known = dataset.field2token_id[dataset.iid_field]
    unknown = [token for token in tokens if str(token) not in known or str(token) == "[PAD]"]
    if unknown:
        raise ConfigError(f"unknown item(s) {', '.join(map(str, unknown))}: not items of dataset "
                          f"'{dataset.dataset_name}'")
    items = np.array([known[str(token)] for token in tokens], dtype=np.int64)
    return Query("history", PAD_USER, items, items)


def pick_device(devices, setting):
    """``(srm, bundle)`` of ``setting``, or of the run's first setting when None."""
    if setting is None:
        return next(iter(devices.values()))
    if setting not in devices:
        raise ConfigError(f"no device setting '{setting}' in this run; it has {', '.join(devices)}")
    return devices[setting]


def answer(dataset, query, shown, cloud_list, k):
    """The top-``k`` of ``shown`` (a device Recommendation) as plain values, each item with its
    source: ``cloud`` (in the cloud list it was fused from) or ``device`` (the device's own top-C)."""
    order = shown_positions(shown.scores)[0][:k]
    ids, scores = shown.item_ids[0, order].tolist(), shown.scores[0, order].tolist()
    from_cloud = set(cloud_list.item_ids[0].tolist())
    tokens = dataset.field2id_token[dataset.iid_field]
    items = [{"item": str(tokens[item]), "source": "cloud" if item in from_cloud else "device", "score": score}
             for item, score in zip(ids, scores)]
    return {"user": query.label, "requested": shown.requested, "fresh": shown.fresh, "items": items}


def check_request(users, history, k):
    """Refuse a request that asks for nothing or for fewer than one item (before a run is loaded)."""
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if not users and history is None:
        raise ConfigError("nothing to recommend for: pass --user=<user token>[,...] or --history=<item tokens>")


def recommend(run, users=(), history=None, k=10, setting=None):
    """What the run's device shows each of ``users`` (tokens) and, when given, a ``history``
    (item tokens): one dict per query, ``{"user", "requested", "fresh", "items": [{"item",
    "source", "score"}, ...]}`` best first. ``run`` is :func:`recbole_lsc.quick_start.load_run`'s
    answer. Bad input raises a :class:`~recbole_lsc.errors.LSCError` before anything is computed."""
    config, dataset, cloud, devices = run
    check_request(users, history, k)
    srm, bundle = pick_device(devices, setting)
    protocol = DeviceCloudProtocol.from_dataset(dataset, config["cloud_lag"])
    queries = user_queries(dataset, protocol, users) + ([history_query(dataset, history)] if history is not None
                                                         else [])
    client = DeviceClient(srm, bundle, cloud)
    answers = []
    with torch.no_grad():
        for query in queries:
            client.receive(query.user, query.stale)
            shown = client.recommend(query.user, query.fresh)
            answers.append(answer(dataset, query, shown, client.cloud_list(query.user), k))
    return answers


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one ConfigError line (the CLI's ``error:``)."""

    def error(self, message):
        raise ConfigError(f"recommend: {message}")


def parse(argv):
    parser = _Parser(prog="recbole-lsc recommend", description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the run folder (next to its results.json)")
    parser.add_argument("--user", default="", help="user token(s), comma separated")
    parser.add_argument("--history", default=None, help="item tokens of a history, oldest first, comma separated")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--setting", default=None, help="device setting (device/<setting>); the run's first")
    parser.add_argument("--dataset", default=None, help="checked against the run's dataset")
    parser.add_argument("--data_path", default=None, help="where the dataset's atomic files are on this machine")
    return parser.parse_args(argv)


def split_tokens(text):
    return [token.strip() for token in text.split(",") if token.strip()]


def main(argv):
    """Print each query's top-k as tab-separated rows: user, rank, item, source, fused score."""
    args = parse(argv)
    users = split_tokens(args.user)
    history = None if args.history is None else split_tokens(args.history)
    check_request(users, history, args.k)
    overrides = {} if args.data_path is None else {"data_path": args.data_path}
    run = load_run(args.run, dataset=args.dataset, **overrides)
    print("user\trank\titem\tsource\tscore")
    for result in recommend(run, users, history, args.k, args.setting):
        for rank, item in enumerate(result["items"], start=1):
            print(f"{result['user']}\t{rank}\t{item['item']}\t{item['source']}\t{item['score']:.6f}")
    return 0
