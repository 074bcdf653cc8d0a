"""``recbole-lsc serve`` and ``recbole-lsc replay``: RecBole's flags, then the deployment; or
``--run=DIR``, a finished run folder (its config, LLM and device bundles; no trained-model cache)."""

import argparse
import logging
import os

import torch
from recbole.utils import init_logger

from recbole_lsc.arguments import config_overrides, model_arguments
from recbole_lsc.deployment.loading import check_bundle_folder, device_bundle
from recbole_lsc.deployment.process import ServiceProcess
from recbole_lsc.deployment.recommend import pick_device
from recbole_lsc.deployment.replay import run_replay, replay_turns
from recbole_lsc.deployment.run_folder import read_run, run_config
from recbole_lsc.deployment.serve import bearer_token, serve
from recbole_lsc.errors import ConfigError
from recbole_lsc.experiment.lsc4rec import load_dataset
from recbole_lsc.quick_start import build_config
from recbole_lsc.results import markdown_table, report_table, result_row, write_results

# replay keys the service does not need
_REPLAY_ONLY = ("replay_bundle", "replay_clients", "replay_cloud_url", "replay_stop_cloud_after", "request_timeout")


def _config(argv, prog, description):
    model, dataset, files, overrides = model_arguments(argv, prog=prog, description=description)
    config = build_config(model, dataset, files, cmd_args=overrides)
    if config["model"] != "LSC4Rec":
        raise ConfigError(f"{prog} works on a LSC4Rec run; use --model=LSC4Rec, not {config['model']}")
    return config, [f"--model={model}", f"--dataset={dataset}", *([f"--config_files={' '.join(files)}"] if files
                                                                   else []), *overrides]


# with --run every other value is the run's: only where and how this machine serves or replays may change
_MACHINE_KEYS = ("data_path", "use_gpu", "gpu_id", "state", "show_progress")
_REPLAY_KEYS = ("replay_clients", "replay_cloud_url", "replay_stop_cloud_after", "request_timeout", "results_dir",
                "run_name")
# where the run wrote its results on the machine that trained it: a replay writes its own
_RUN_OUTPUTS = ("results_dir", "run_name")
_SERVING = f"serve_*, {', '.join(_MACHINE_KEYS)}"
_REPLAYING = f"{_SERVING}, {', '.join(_REPLAY_KEYS)}; the bundle is chosen with --setting"


def serving_key(key):
    """A key ``serve --run`` takes: how this machine serves, never what the run trained."""
    return key.startswith("serve_") or key in _MACHINE_KEYS


def replaying_key(key):
    """A key ``replay --run`` takes: the service's, the replay's own and where its results go."""
    return serving_key(key) or key in _REPLAY_KEYS


def _key(arg):
    return arg[2:].partition("=")[0]


class _RunParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one ConfigError line (the CLI's ``error:``)."""

    def error(self, message):
        raise ConfigError(f"{self.prog}: {message}")


def _run_arguments(argv, prog, description, allowed, setting=False):
    """``(args, overrides)`` of ``--run=DIR [--model] [--dataset] [--setting] [--key=value ...]``;
    a key ``allowed`` refuses is a value the run fixed (training, its bundle): one ConfigError line."""
    parser = _RunParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--run", required=True, help="a finished LSC4Rec run folder (next to its results.json)")
    parser.add_argument("--model", "-m", default=None, help="checked against the run's model")
    parser.add_argument("--dataset", "-d", default=None, help="checked against the run's dataset")
    if setting:
        parser.add_argument("--setting", default=None, help="device bundle (device/<setting>); the run's first")
    args, overrides = config_overrides(parser, argv)
    refused = [_key(arg) for arg in overrides if not allowed(_key(arg))]
    if refused:
        keys = _REPLAYING if setting else _SERVING
        raise ConfigError(f"{prog} --run takes the run's config from its run.json; the command line sets only how "
                          f"this machine runs it ({keys}), not {', '.join(refused)}")
    return args, overrides


def _uses_run(argv):
    return any(arg == "--run" or arg.startswith("--run=") for arg in argv)


def serve_main(argv):
    prog, description = "recbole-lsc serve", "Serve the trained cloud LLM of a LSC4Rec config or run folder over HTTP."
    if not _uses_run(argv):
        config, _ = _config(argv, prog, description)
        serve(config)
        return 0
    args, overrides = _run_arguments(argv, prog, description, serving_key)
    _, config = run_config(args.run, args.model, args.dataset, drop=_RUN_OUTPUTS, cmd_args=overrides)
    serve(config, run_dir=args.run)
    return 0


def _replay_run_config(argv, prog, description):
    """``(config, service args)`` of ``replay --run``: the run's config replaying the bundle of
    ``--setting``, and the ``serve --run`` flags of the service it starts (the serving keys given)."""
    args, overrides = _run_arguments(argv, prog, description, replaying_key, setting=True)
    settings = read_run(args.run)["settings"]
    setting = pick_device(dict(zip(settings, settings)), args.setting)  # the setting's name, checked
    _, config = run_config(args.run, args.model, args.dataset, drop=_RUN_OUTPUTS, cmd_args=overrides,
                           replay_bundle=os.path.join(args.run, "device", setting))
    return config, [f"--run={os.path.abspath(args.run)}", *(arg for arg in overrides if serving_key(_key(arg)))]


def replay_table(report):
    """The replay's figures as a markdown table (one metric per line)."""
    lines = ["| replay | value |", "|---|---|"]
    for key in ("users", "served", "identical_to_simulation", "users_differing", "differing_where_the_cloud_answered",
                "http_calls", "failures", "refused", "shed", "seconds"):
        lines.append(f"| {key} | {report[key]} |")
    for group in ("requests", "bytes_per_call", "latency_ms", "throughput"):
        lines += [f"| {group} {key} | {value} |" for key, value in report[group].items()]
    for key, value in report.get("served_from_cache_after_failed_request", {}).items():
        lines.append(f"| served from cache after a failed request: {key} | {value} |")
    return "\n".join(lines)


def _replay(config, service_args):
    if not config["replay_bundle"]:
        raise ConfigError("replay needs --replay_bundle=<run folder>/device/<candidates|full> (a LSC4Rec run writes "
                          "one per device_catalogue setting next to its results.json)")
    check_bundle_folder(config["replay_bundle"])  # before the dataset is loaded
    dataset, protocol, srm_config = load_dataset(config)
    srm, bundle = device_bundle(config, dataset, srm_config, config["replay_bundle"])
    item_tokens = list(dataset.field2id_token[dataset.iid_field])
    turns, token = replay_turns(protocol), bearer_token(config)
    if config["replay_cloud_url"]:
        if config["replay_stop_cloud_after"] is not None:
            raise ConfigError("replay_stop_cloud_after stops a service the replay started; drop replay_cloud_url")
        return run_replay(srm, bundle, item_tokens, turns, config, config["replay_cloud_url"], token), bundle
    args = [arg for arg in service_args if not arg.lstrip("-").split("=")[0] in _REPLAY_ONLY]
    with ServiceProcess(args) as service:
        logging.getLogger().info(f"cloud service started at {service.url}")
        report = run_replay(srm, bundle, item_tokens, turns, config, service.url, token,
                            on_share=lambda share: service.stop())
    return report, bundle


def replay_main(argv):
    prog = "recbole-lsc replay"
    description = "Replay a LSC4Rec run's test users through device clients against the cloud service."
    config, service_args = (_replay_run_config if _uses_run(argv) else _config)(argv, prog, description)
    init_logger(config)
    torch.set_num_threads(1)  # the replay scores what the clients return; the service has its own threads
    report, bundle = _replay(config, service_args)
    row = result_row(f"LSC4Rec replay ({bundle.device_catalogue})", "replay", {}, report["test"],
                     device_catalogue=bundle.device_catalogue, clients=config["replay_clients"])
    path = write_results(config, [row], replay=report, replay_bundle=os.path.abspath(config["replay_bundle"]))
    report_table("replay result", markdown_table([row]))
    report_table("replay against the simulation", replay_table(report))
    logging.getLogger().info(f"results written to {path}")
    return 0 if replay_passed(report) else 1


def replay_passed(report):
    """The replay equals the simulation for every user no failed call touched, at least one call
    got a list, and the cloud refused nothing (a 4xx is a misconfiguration, not an outage)."""
    return report["differing_where_the_cloud_answered"] == 0 and report["served"] > 0 and report["refused"] == 0
