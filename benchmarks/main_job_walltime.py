"""End-to-end wall time of the default main job (goal: <= 10 minutes).

Runs ``recbole-lsc --model=LSC4Rec --dataset=ml-100k`` (the README's main command) in a
subprocess, in a temporary working folder with temporary ``results_dir`` and
``checkpoint_dir``, and reports its wall seconds, exit status and the stage seconds it
wrote to ``results.json``. Any other ``--key=value`` flag is passed on to the job, e.g. a
quick check of this script: ``--epochs=1 --llm_epochs=1 --coop_epochs=1 --retrain_epochs=1``.
``--device=cpu`` passes ``--gpu_id=`` (RecBole then runs on the CPU); ``--threads=N`` sets
``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` for the job. ``--dry-run`` prints the command only.

    python benchmarks/main_job_walltime.py                  # the measurement itself (minutes)
    python benchmarks/main_job_walltime.py --dry-run
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import emit, markdown, parse, parser, run

GOAL_SECONDS = 600.0


def job_command(args, overrides, folder):
    exe = shutil.which("recbole-lsc", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    command = [exe] if exe else [sys.executable, "-m", "recbole_lsc.cli"]
    command += [f"--model={args.model}", f"--dataset={args.dataset}",
                f"--results_dir={os.path.join(folder, 'results')}", f"--checkpoint_dir={os.path.join(folder, 'saved')}"]
    if args.device == "cpu":
        command.append("--gpu_id=")
    return command + overrides


def summary(folder):
    """Stage seconds and a few figures from the job's results.json (None when it wrote none)."""
    results = os.path.join(folder, "results")
    found = [os.path.join(root, name) for root, _, names in os.walk(results) for name in names if name == "results.json"]
    if not found:
        return None
    with open(found[0], encoding="utf-8") as handle:
        payload = json.load(handle)
    out = {"rows": [row["role"] for row in payload.get("results", [])]}
    runs = payload.get("runs") or []
    if runs:
        out["stages"] = runs[0].get("stages")
    if "cost" in payload:
        out["cost"] = {k: v for k, v in payload["cost"].items() if k != "cloud_calls"}
    main = [row for row in payload.get("results", []) if row.get("role") == "lsc4rec"]
    if main:
        out["lsc4rec_test"] = main[0].get("test")
    return out


def main(argv=None):
    p = parser(__doc__, users=None)
    p.add_argument("--model", default="LSC4Rec")
    p.add_argument("--timeout", type=float, default=None, help="kill the job after this many seconds")
    p.add_argument("--dry-run", action="store_true", help="print the command and exit")
    p.add_argument("--keep", action="store_true", help="keep the job's temporary folder (its path is reported)")
    args, overrides = parse(p, argv)
    folder = tempfile.mkdtemp(prefix="lsc-main-job-")
    command = job_command(args, overrides, folder)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    result = {"benchmark": "main_job_walltime", "dataset": args.dataset, "model": args.model,
              "command": command, "overrides": overrides, "goal_seconds": GOAL_SECONDS}
    if args.dry_run:
        os.rmdir(folder)
        result["dry_run"] = True
        emit(result, ["dry run: " + " ".join(command)], args.out)
        return 0

    log_path = os.path.join(folder, "job.log")
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        try:
            rc = subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=args.timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = None
    wall = time.perf_counter() - start
    with open(log_path, encoding="utf-8", errors="replace") as log:
        tail = log.read()[-3000:]
    result.update({
        "wall_seconds": round(wall, 2), "returncode": rc, "timed_out": rc is None,
        "goal_met": rc == 0 and wall <= GOAL_SECONDS, "job": summary(folder),
        "loadavg_1min": round(os.getloadavg()[0], 2), "cpu_count": os.cpu_count(),
    })
    if args.keep:
        result["folder"] = folder
    else:
        shutil.rmtree(folder, ignore_errors=True)
    if rc != 0:
        sys.stderr.write(f"the job failed (returncode {rc}); last lines of its output:\n{tail}\n")
    lines = markdown(["job", "wall s", "goal s", "returncode"],
                     [(" ".join(command[1:3] + overrides), wall, GOAL_SECONDS, rc)])
    stages = (result["job"] or {}).get("stages") or {}
    if stages:
        lines += ["", *markdown(["stage", "seconds"], [(name, info.get("seconds")) for name, info in stages.items()])]
    emit(result, lines, args.out)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(run(main))
