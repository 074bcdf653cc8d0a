"""Are two results.json files the same experiment's figures? (exit 0 when identical)

Compares what a run measures: rows, request curve, policy tests, per-user test vectors, the
tuned alphas and learned-policy weights, cost counts and stage outcomes. Wall-clock figures
(seconds, cloud/device speed ratio), paths, versions and the config snapshot are left out.

    python benchmarks/compare_results.py BEFORE/results.json AFTER/results.json
"""

import argparse
import json
import sys

TIMING = {"seconds", "cloud_seconds_per_user", "device_seconds_per_user", "cloud_over_device", "cached"}
COMPARED = ("results", "seeds", "request_curve", "policy_tests", "per_user_test", "cost", "runs")


def without_timing(value):
    if isinstance(value, dict):
        return {key: without_timing(item) for key, item in value.items() if key not in TIMING}
    if isinstance(value, list):
        return [without_timing(item) for item in value]
    return value


def differences(before, after, path=""):
    """Paths (``results[3].test.ndcg@10``) where the two values differ, with both values."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = [f"{path}.{key}: only in {'before' if key in before else 'after'}"
                 for key in sorted(set(before) ^ set(after))]
        for key in sorted(set(before) & set(after)):
            found += differences(before[key], after[key], f"{path}.{key}")
        return found
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return [f"{path}: {len(before)} items before, {len(after)} after"]
        return [diff for index, (b, a) in enumerate(zip(before, after)) for diff in differences(b, a, f"{path}[{index}]")]
    if before != after and not (before != before and after != after):  # NaN equals NaN here
        return [f"{path}: {before!r} before, {after!r} after"]
    return []


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    args = parser.parse_args(argv)
    payloads = []
    for path in (args.before, args.after):
        with open(path, encoding="utf-8") as handle:
            payload = json.load(handle)
        payloads.append({key: without_timing(payload.get(key)) for key in COMPARED})
    found = differences(*payloads)
    for line in found[:50]:
        print(line)
    print(f"{len(found)} difference(s) in {', '.join(COMPARED)}" if found else "identical: " + ", ".join(COMPARED))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
