"""A benchmark sweep: LSC4Rec and its baselines for every dataset x variant x SRM backbone x seed.

A variant is a yaml file layered on the sweep's own config files (e.g. one per cloud
backbone), named by its file name; without variants there is one, unnamed. Every job is one
``--model=LSC4Rec --seeds=1`` run writing
``<out>/runs/<dataset>/[<variant>/]<srm>-<config id>/seed<seed>/results.json`` (atomically). A re-run
skips jobs whose results.json exists, so an interrupted sweep resumes where it stopped and
never rewrites a finished row; a changed config gets a new config id, hence new folders.
The cloud LLM is cached by its own config (``trained_llm_cache``): the first backbone of
each dataset and seed trains it, the others load it. With ``workers`` > 1 or a Ray
address, jobs run as Ray tasks in two waves (cloud-training jobs first); otherwise they
run in this process and Ray is never started.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass

from tqdm.auto import tqdm

from recbole_lsc.config import srm_config_of
from recbole_lsc.errors import ConfigError
from recbole_lsc.quick_start import build_config, run_recbole_lsc
from recbole_lsc.results import config_snapshot

# Keys that locate or label a job rather than define its experiment.
_NOT_EXPERIMENT = ("seed", "seeds", "run_name", "results_dir", "checkpoint_dir", "trained_llm_cache",
                   "trained_srm_cache", "device",
                   "gpu_id", "state", "show_progress", "request_timeout")
# Deployment keys (the service, the replay) never change what a simulated run measures: adding or
# changing one must not send a resumed sweep back to its first seed.
_DEPLOYMENT_PREFIXES = ("serve_", "replay_")


@dataclass(frozen=True)
class Job:
    dataset: str
    srm: str
    seed: int
    config_id: str
    config_files: tuple
    overrides: tuple
    results_dir: str
    variant: str = ""

    @property
    def run_name(self):
        return os.path.join(self.dataset, self.variant, f"{self.srm}-{self.config_id}", f"seed{self.seed}")

    @property
    def results_path(self):
        return os.path.join(self.results_dir, self.run_name, "results.json")

    def cmd_args(self):
        return [*self.overrides, f"--srm={self.srm}", f"--seed={self.seed}", "--seeds=1",
                f"--results_dir={self.results_dir}", f"--run_name={self.run_name}"]


def config_id(config):
    """Short hash of the experiment's config (everything but seed, paths and display keys)."""
    return snapshot_id(config_snapshot(config))


def snapshot_id(snapshot):
    """:func:`config_id` of a stored config snapshot (``results.json``'s ``config``)."""
    experiment = {k: v for k, v in snapshot.items()
                  if k not in _NOT_EXPERIMENT and not k.startswith(_DEPLOYMENT_PREFIXES)}
    return hashlib.sha256(json.dumps(experiment, sort_keys=True).encode("utf-8")).hexdigest()[:10]


def variant_names(variant_files):
    """``{name: absolute path}`` of the variant yaml files (name = file name without ``.yaml``);
    ``{"": None}`` when there are none. A missing file or a repeated name is a ConfigError."""
    if not variant_files:
        return {"": None}
    names = {}
    for file in variant_files:
        name = os.path.splitext(os.path.basename(file))[0]
        if not os.path.isfile(file):
            raise ConfigError(f"variant file '{file}' does not exist; pass yaml files to --variants")
        if name in names:
            raise ConfigError(f"two variant files are named '{name}' ({names[name]}, {file}); rename one")
        names[name] = os.path.abspath(file)
    return names


def plan(datasets, srms, seeds, config_files, overrides, out, variant_files=None):
    """Jobs ordered dataset -> seed -> variant -> backbone, and ``{config_id: spec}`` (full
    configs included).

    Every config is built (and so validated) here, before any job runs.
    """
    datasets, srms = list(dict.fromkeys(datasets)), list(dict.fromkeys(srms))  # a repeated name runs once
    variants = variant_names(variant_files)
    results_dir = os.path.abspath(os.path.join(out, "runs"))
    config_files = [os.path.abspath(file) for file in config_files or []]
    overrides = tuple(overrides)
    first = build_config("LSC4Rec", datasets[0], config_files, cmd_args=overrides)
    overrides += tuple(_absolute_paths(first))
    jobs, configs = [], {}
    for dataset in datasets:
        for variant, variant_file in variants.items():
            files = config_files + ([variant_file] if variant_file else [])
            for srm in srms:
                config = build_config("LSC4Rec", dataset, files, cmd_args=[*overrides, f"--srm={srm}"])
                srm_config_of(config)  # an unknown or misconfigured SRM fails here, not mid-sweep
                cid = config_id(config)
                configs[cid] = {"dataset": dataset, "variant": variant, "srm": srm, "config_files": files,
                                "overrides": list(overrides), "config": config_snapshot(config)}
                for offset in range(seeds):
                    jobs.append(Job(dataset, srm, config["seed"] + offset, cid, tuple(files), overrides,
                                    results_dir, variant))
    order = list(variants)
    jobs.sort(key=lambda job: (datasets.index(job.dataset), job.seed, order.index(job.variant), srms.index(job.srm)))
    return jobs, configs


def _absolute_paths(config):
    """Overrides that make relative cache/checkpoint folders absolute, so that Ray workers share them."""
    for key in ("trained_llm_cache", "trained_srm_cache", "checkpoint_dir"):
        value = config[key]
        if value and not os.path.isabs(value):
            yield f"--{key}={os.path.abspath(value)}"


def run_job(job):
    """Run one job in this process; return its results.json path."""
    root = logging.getLogger()
    for handler in list(root.handlers):  # RecBole's init_logger only configures a bare root logger
        root.removeHandler(handler)
        handler.close()
    out = run_recbole_lsc("LSC4Rec", job.dataset, list(job.config_files) or None, cmd_args=job.cmd_args())
    return out["path"]


def _try(job, run):
    """Run ``job``; a failure is logged and returned as ``(job, message)``, not raised."""
    try:
        run(job)
        return None
    except Exception as err:  # one broken job must not lose the rest of the sweep
        message = f"{type(err).__name__}: {err}"
        logging.getLogger().error(f"sweep job {job.run_name} failed: {message}")
        return job, message


def _run_job_spec(spec):
    return run_job(Job(**spec))


def pending(jobs):
    return [job for job in jobs if not os.path.isfile(job.results_path)]


def run_jobs(jobs, workers=1, ray_address=None):
    """Run the unfinished ``jobs`` (finished ones are skipped); return the failures ``[(job, message)]``."""
    todo = pending(jobs)
    logger = logging.getLogger()
    logger.info(f"sweep: {len(jobs) - len(todo)} of {len(jobs)} jobs already finished, {len(todo)} to run")
    if not todo:
        return []
    if workers <= 1 and ray_address is None:
        failures = [_try(job, run_job) for job in tqdm(todo, desc="sweep", unit="job")]
        return [failure for failure in failures if failure]
    return _run_on_ray(todo, workers, ray_address)


def _run_on_ray(todo, workers, ray_address):
    import ray

    if ray_address:
        ray.init(address=ray_address)
    else:
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_run_job_spec)
        first = {}
        for job in todo:  # one job per (dataset, variant, seed) trains (and caches) that cloud
            first.setdefault((job.dataset, job.variant, job.seed), job)
        waves = [list(first.values()), [job for job in todo if job not in first.values()]]
        failures = []
        with tqdm(total=len(todo), desc="sweep", unit="job") as bar:
            for wave in waves:
                refs = {remote.remote(asdict(job)): job for job in wave}
                pending_refs = list(refs)
                while pending_refs:
                    done, pending_refs = ray.wait(pending_refs, num_returns=1)
                    failure = _try(refs[done[0]], lambda _: ray.get(done[0]))
                    if failure:
                        failures.append(failure)
                    bar.update(1)
        return failures
    finally:
        ray.shutdown()
