"""Per-stage convergence and cost of the main job: what a converged seed costs, and where.

Runs the main job (``recbole-lsc --model=LSC4Rec --dataset=D`` with any ``--key=value``
overrides, every model to early stopping) once in a subprocess, as ``main_job_walltime.py``
does, or reads the ``results.json`` of a run that already finished (``--results FILE``, e.g.
one seed of a ``recbole-lsc benchmark``), and reports per training stage (cloud LLM, ``srm``
reference, device SRM, cooperative, each re-training): the trainer, seconds per training
epoch, seconds per validation pass, epochs trained, best epoch, best validation
``valid_metric`` and wall seconds; then the run's wall seconds per step (data loading, the
stages, fusion/policy fitting/curves, device bundles, cost). ``--profile N`` runs the job
under cProfile and adds its top N entries by cumulative time.

``--table A.json B.json ...`` renders outputs of this script (``--out``) side by side, one
column block per run, as the before/after table of ``benchmarks/README.md``.

    python benchmarks/convergence.py --dataset=ml-1m --out=benchmarks/runs/convergence_ml-1m.json
    python benchmarks/convergence.py --results=runs/ml-1m/seed2020/results.json --out=...
    python benchmarks/convergence.py --table before.json after.json > benchmarks/runs/convergence.md
"""

import json
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time

from _common import emit, markdown, parse, parser, run
from main_job_walltime import job_command

STAGE_KEYS = ("trainer", "train_seconds_per_epoch", "valid_seconds_per_pass", "epochs_trained", "best_epoch",
              "best_valid", "seconds")


def stage_rows(payload):
    """One row per training stage of the first run in a results.json payload."""
    run_info = (payload.get("runs") or [{}])[0]
    rows = []
    for name, log in (run_info.get("stages") or {}).items():
        if "kept" in log:  # a fine-tuning stage: its epochs are the configured ones, its best is on validation
            log = {"trainer": "fine-tune" if log.get("kept") else "fine-tune (undone)",
                   "epochs_trained": log.get("epochs"), "best_epoch": log.get("best_epoch"),
                   "best_valid": log.get("valid_after"), "seconds": log.get("seconds"),
                   "train_seconds_per_epoch": None, "valid_seconds_per_pass": None}
        elif "train_seconds_per_epoch" not in log and log.get("epochs_trained"):
            log = {**log, "train_seconds_per_epoch": round(log["seconds"] / log["epochs_trained"], 2)}
        rows.append({"stage": name, **{key: log.get(key) for key in STAGE_KEYS}, "stored": "cached" in log})
    return rows


def headline(payload):
    """Test ``valid_metric`` of each row, by row name (what the converged run concludes)."""
    metric = payload.get("config", {}).get("valid_metric", "NDCG@10").lower()
    return {row["name"]: row["test"].get(metric) for row in payload.get("results", [])}


def from_results(path):
    with open(path, encoding="utf-8") as handle:
        payload = json.load(handle)
    run_info = (payload.get("runs") or [{}])[0]
    return {"results": os.path.abspath(path), "dataset": payload.get("dataset"), "stages": stage_rows(payload),
            "wall_seconds": run_info.get("wall_seconds"), "test": headline(payload)}


def run_job(args, overrides):
    """Run the main job in a temporary folder; its figures (and profile) and wall seconds."""
    folder = tempfile.mkdtemp(prefix="lsc-convergence-")
    command = job_command(args, overrides, folder)
    if args.profile:
        command = [sys.executable, "-m", "cProfile", "-o", os.path.join(folder, "job.prof"),
                   "-m", "recbole_lsc.cli", *command[1:]]
    started = time.perf_counter()
    with open(os.path.join(folder, "job.log"), "w", encoding="utf-8") as log:
        rc = subprocess.run(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    wall = round(time.perf_counter() - started, 1)
    found = [os.path.join(root, "results.json") for root, _, names in os.walk(os.path.join(folder, "results"))
             if "results.json" in names]
    if rc != 0 or not found:
        with open(os.path.join(folder, "job.log"), encoding="utf-8", errors="replace") as log:
            sys.stderr.write(log.read()[-3000:])
        raise SystemExit(f"error: the main job failed (returncode {rc}); its output is above")
    result = {**from_results(found[0]), "command": command, "job_wall_seconds": wall}
    result["results"] = None  # the temporary folder goes away
    if args.profile:
        result["profile"] = top_entries(os.path.join(folder, "job.prof"), args.profile)
    shutil.rmtree(folder, ignore_errors=True)
    return result


def top_entries(path, count):
    """The ``count`` entries with the most cumulative time of a cProfile dump."""
    stats = pstats.Stats(path)
    entries = sorted(stats.stats.items(), key=lambda item: item[1][3], reverse=True)[:count]
    return [{"function": f"{os.path.basename(file)}:{line}({name})", "calls": calls, "own_s": round(own, 2),
             "cumulative_s": round(cumulative, 2)}
            for (file, line, name), (_, calls, own, cumulative, _) in entries]


def lines_of(result):
    lines = markdown(["stage", *STAGE_KEYS, "stored"], [[row["stage"], *(row[key] for key in STAGE_KEYS), row["stored"]]
                                                       for row in result["stages"]])
    steps = result.get("wall_seconds") or {}
    lines += ["", *markdown(["step", "wall s"], [*steps.items(), ("total", round(sum(steps.values()), 1))])]
    if result.get("profile"):
        lines += ["", *markdown(["function", "calls", "own s", "cumulative s"],
                                [[e["function"], e["calls"], e["own_s"], e["cumulative_s"]] for e in result["profile"]])]
    return lines


def table(paths):
    """Markdown: per stage, epochs / best epoch / s per epoch / wall s of each run; then step totals."""
    runs = []
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            runs.append((os.path.basename(path), json.load(handle)))
    stages = list(dict.fromkeys(row["stage"] for _, result in runs for row in result["stages"]))
    header = ["stage", *(f"{name}: {what}" for name, _ in runs for what in ("trainer", "epochs (best)", "s/epoch",
                                                                             "best valid", "wall s"))]
    body = []
    for stage in stages:
        cells = [stage]
        for _, result in runs:
            row = next((r for r in result["stages"] if r["stage"] == stage), None)
            cells += ["" if row is None else value for value in (
                None if row is None else row["trainer"],
                None if row is None else f"{row['epochs_trained']} ({row['best_epoch']})",
                None if row is None else row["train_seconds_per_epoch"],
                None if row is None else row["best_valid"], None if row is None else row["seconds"])]
        body.append(cells)
    total = ["whole job (wall s)"]
    for _, result in runs:
        total += ["", "", "", "", round(sum((result.get("wall_seconds") or {}).values()), 1)]
    return markdown(header, [*body, total])


def main(argv=None):
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--table":
        print("\n".join(table(argv[1:])))
        return 0
    p = parser(__doc__, users=None)
    p.add_argument("--model", default="LSC4Rec")
    p.add_argument("--results", default=None, help="tabulate this finished run's results.json instead of running")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="run under cProfile and report the top N")
    args, overrides = parse(p, argv)
    result = from_results(args.results) if args.results else run_job(args, overrides)
    result.update({"benchmark": "convergence", "overrides": overrides, "loadavg_1min": round(os.getloadavg()[0], 2),
                   "cpu_count": os.cpu_count()})
    emit(result, lines_of(result), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
