"""``recbole-lsc serve`` and ``recbole-lsc replay``: RecBole's flags, then the deployment."""

import logging
import os

import torch
from recbole.utils import init_logger

from recbole_lsc.arguments import model_arguments
from recbole_lsc.deployment.loading import check_bundle_folder, device_bundle
from recbole_lsc.deployment.process import ServiceProcess
from recbole_lsc.deployment.replay import run_replay, replay_turns
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


def serve_main(argv):
    config, _ = _config(argv, "recbole-lsc serve", "Serve the trained cloud LLM of a LSC4Rec config over HTTP.")
    serve(config)
    return 0


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
    config, service_args = _config(argv, "recbole-lsc replay",
                                   "Replay a LSC4Rec run's test users through device clients against the cloud service.")
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
