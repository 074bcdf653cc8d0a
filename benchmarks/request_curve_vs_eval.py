"""Full request-curve evaluation time / one plain evaluation pass (goal: <= 2).

With the LLM's candidate lists already cached (valid and test, stale and fresh, through
``CloudLists.get``; the fill is timed on its own), the curve evaluation is what the pipeline
runs after training:

* ``experiment.lsc4rec.collaboration(config, srm, lists, protocol, setting)``: the SRM's scores of
  both lists, request features, alpha tuned on validation, per-user metrics, the learned
  policy's fit (a ``Collaboration``);
* ``Collaboration.curve`` over ``request_curve_ratios`` (7 by default), timed for the policy
  sets random + consistency, + learned, and the pipeline's own set (every policy the setting
  can run, + oracle), by narrowing ``Collaboration.policies`` for the call.

``--setting`` is the ``device_catalogue`` setting timed (default full: its catalogue features
cost the most).

Plain evaluation: one pass of the SRM's RecBole trainer ``evaluate`` over the test loader
(full-catalogue ranking through RecBole's Evaluator: the ``srm`` row's test figures).
Random weights: the timing does not depend on training.

    python benchmarks/request_curve_vs_eval.py --dataset=ml-100k --repeat=5
    python benchmarks/request_curve_vs_eval.py --users=100 --repeat=1 --profile=25   # cProfile the curve
"""

import contextlib
import sys
import time

import recbole_lsc.experiment.lsc4rec as experiment
from _common import (
    emit, environment, lsc4rec_setup, markdown, parse, parser, profile, profile_table, run, scratch_cwd,
    timed,
)

GOAL = 2.0
POLICY_SETS = {
    "random+consistency": ("random", "consistency"),
    "random+consistency+learned": ("random", "consistency", "learned"),
    "pipeline": None,  # the Collaboration's own
}


@contextlib.contextmanager
def curve_policies(collab, policies):
    """``collab.curve`` runs over ``policies`` (None: its own) only inside the block."""
    saved = collab.policies
    collab.policies = tuple(policies or saved)
    try:
        yield
    finally:
        collab.policies = saved


def main(argv=None):
    """Time the list fill, plain RecBole evaluation, the Collaboration set-up and each curve."""
    p = parser(__doc__, profile_what="one Collaboration + pipeline curve")
    p.add_argument("--repeat", type=int, default=5, help="timed runs of each part (median; one warm-up first)")
    p.add_argument("--setting", choices=("candidates", "full"), default="full", help="device_catalogue setting timed")
    args, overrides = parse(p, argv)
    wall = time.perf_counter()
    with scratch_cwd():
        setup = lsc4rec_setup(args, overrides)
        config, lists, device = setup.config, setup.lists, setup.device
        srm, protocol = setup.model.srm, setup.protocol
        ratios, seed = config["request_curve_ratios"], config["seed"]
        srm_trainer = setup.srm_recbole_trainer()

        def fill():
            for phase in ("valid", "test"):
                for view in ("stale", "fresh"):
                    lists.get(phase, view)

        cache_s, _ = timed(fill, device)
        plain_s, _ = timed(lambda: srm_trainer.evaluate(setup.test_data, load_best_model=False), device,
                           args.repeat, warmup=1)
        plain_valid_s, _ = timed(lambda: srm_trainer.evaluate(setup.valid_data, load_best_model=False), device,
                                 args.repeat, warmup=1)

        def collaborate():
            return experiment.collaboration(config, srm, lists, protocol, args.setting)

        setup_s, collab = timed(collaborate, device, args.repeat, warmup=1)
        curves, points = {}, {}
        for name, policies in POLICY_SETS.items():
            with curve_policies(collab, policies):
                curves[name], (curve, _) = timed(lambda: collab.curve(ratios, seed), device, args.repeat, warmup=1)
            points[name] = len(curve)
        profiles = {}
        if args.profile:
            _, profiles["collaboration_and_curve"] = profile(
                lambda: collaborate().curve(ratios, seed), args.profile
            )

    head = setup_s + curves["pipeline"]
    result = {
        "benchmark": "request_curve_vs_eval",
        "dataset": args.dataset, "users": len(protocol.samples("test")), "srm": config["srm"],
        "candidate_num": config["candidate_num"], "device_catalogue": args.setting, "ratios": list(ratios),
        "repeat": args.repeat,
        "goal_curve_over_plain": GOAL,
        "plain_eval_seconds": plain_s,
        "collaboration_setup_seconds": setup_s,
        "curve_seconds": curves,
        "curve_points": points,
        "curve_over_plain": head / plain_s,
        "goal_met": head / plain_s <= GOAL,
        "setup_plus_curve_over_plain": {name: (setup_s + s) / plain_s for name, s in curves.items()},
        "curve_only_over_plain": {name: s / plain_s for name, s in curves.items()},
        # the set-up scores valid and test; against plain passes over both splits:
        "plain_eval_valid_seconds": plain_valid_s,
        "curve_over_plain_valid_and_test": head / (plain_s + plain_valid_s),
        "llm_cache_fill_seconds": cache_s,
        "environment": environment(device),
        "wall_seconds": round(time.perf_counter() - wall, 2),
    }
    if profiles:
        result["profile"] = profiles
    lines = [f"{result['users']} users, {len(ratios)} ratios, {config['srm']}, C = {config['candidate_num']}, "
             f"device {device}; goal: Collaboration + curve <= {GOAL} x plain evaluation\n"]
    rows = [("plain SRM evaluation pass (RecBole evaluate, test)", plain_s, 1.0),
            ("Collaboration set-up (valid + test, cached LLM lists)", setup_s, setup_s / plain_s)]
    for name, seconds in curves.items():
        rows.append((f"curve, {name} ({points[name]} points)", seconds, seconds / plain_s))
        rows.append((f"set-up + curve, {name}", setup_s + seconds, (setup_s + seconds) / plain_s))
    rows.append(("plain SRM evaluation passes, valid + test", plain_s + plain_valid_s, (plain_s + plain_valid_s) / plain_s))
    rows.append(("LLM list fill (4 cloud candidate passes, once)", cache_s, cache_s / plain_s))
    lines += markdown(["what", "seconds", "vs plain evaluation"], rows)
    for name, entries in profiles.items():
        lines += profile_table(entries["cumulative"], f"cProfile {name}, top cumulative")
        lines += profile_table(entries["tottime"][:10], f"cProfile {name}, top own time")
    emit(result, lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
