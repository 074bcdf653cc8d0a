"""Paired test of two rows over the same test users, from one or two results.json files.

Every run stores its test users' per-user metric (mean over its seeds) for each single model and
each `lsc4rec` setting under "per_user_test"; this compares any two of them, also across runs
(one cloud against another, one variant against another), with the test the leaderboard uses:

    python benchmarks/paired_rows.py RUN_A/results.json:llm_fresh RUN_B/results.json:srm

A side is `PATH:ROLE`; ROLE is a key of "per_user_test" (`srm`, `llm_stale`, `llm_fresh`,
`srm_rerank`, `lsc4rec/candidates`, `lsc4rec/full`). Prints a markdown line, then one JSON object.
"""

import argparse
import json
import sys

from recbole_lsc.evaluation.stats import paired_test


class InputError(Exception):
    """A side that cannot be read or compared; reported as one `error:` line."""


def per_user(side):
    """``(metric, values)`` of ``PATH:ROLE``."""
    path, sep, role = side.rpartition(":")
    if not sep or not path or not role:
        raise InputError(f"{side!r}: give PATH:ROLE, e.g. runs/seed0/results.json:llm_fresh")
    try:
        with open(path, encoding="utf-8") as handle:
            users = json.load(handle).get("per_user_test")
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read it as a results.json ({err})") from None
    if not isinstance(users, dict):
        raise InputError(f"{path}: has no per_user_test (written by recbole-lsc --model=LSC4Rec runs)")
    if role not in users or role == "metric":
        roles = ", ".join(key for key in users if key != "metric")
        raise InputError(f"{path}: no row {role!r} in per_user_test; it holds {roles}")
    return users.get("metric"), users[role]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("ours", help="PATH:ROLE of the row tested")
    parser.add_argument("theirs", help="PATH:ROLE of the row it is tested against")
    args = parser.parse_args(argv)
    try:
        (metric, ours), (other_metric, theirs) = per_user(args.ours), per_user(args.theirs)
        if metric != other_metric:
            raise InputError(f"the two sides measure different metrics ({metric} vs {other_metric})")
        if len(ours) != len(theirs):
            raise InputError(f"the two sides hold {len(ours)} and {len(theirs)} test users: not the same dataset split")
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    test = paired_test(ours, theirs)
    result = {"ours": args.ours, "theirs": args.theirs, "metric": metric, "users": len(ours),
              "ours_mean": round(sum(ours) / len(ours), 6), "theirs_mean": round(sum(theirs) / len(theirs), 6), **test}
    print(f"| {args.ours} | {args.theirs} | {metric} {result['ours_mean']:.4f} vs {result['theirs_mean']:.4f} "
          f"| diff {test['mean_diff']:+.4f} | Wilcoxon p {test['wilcoxon_p']:.2g} | t p {test['t_p']:.2g} | {len(ours)} users |")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
