"""Command-line config overrides, RecBole's way: every extra ``--key=value`` is a config value."""

import argparse
import shlex


def config_overrides(parser, argv):
    """``(known args, overrides)`` of ``argv``; anything else than ``--key=value`` is refused
    through ``parser.error`` (one usage line, exit 2)."""
    args, rest = parser.parse_known_args(argv)
    bad = [arg for arg in rest if not (arg.startswith("--") and "=" in arg and len(arg) > 3)]
    if bad:
        parser.error(f"unrecognised argument(s) {' '.join(bad)}; config values are given as --key=value")
    return args, rest


def model_arguments(argv, prog="recbole-lsc", description=None):
    """RecBole's ``--model``, ``--dataset``, ``--config_files`` and the ``--key=value`` overrides:
    ``(model, dataset, config files or None, overrides)``."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog=prog,
        description=description or "Run a RecBole or recbole-lsc model; extra --key=value pairs override the config.",
    )
    parser.add_argument("--model", "-m", default="LSC4Rec", help="model name (default: LSC4Rec)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    args, rest = config_overrides(parser, argv)
    files = args.config_files.split() if args.config_files else None
    return args.model, args.dataset, files, rest


def command_line(model, dataset, config_files=None, config_dict=None, cmd_args=()):
    """The ``recbole-lsc`` command that gives a run its config: what a results page prints so
    a reader can run one row's job again (``config_dict`` values as ``--key=value``, RecBole's way)."""
    words = ["recbole-lsc", f"--model={model}", f"--dataset={dataset}"]
    if config_files:
        words.append(shlex.quote(f"--config_files={' '.join(config_files)}"))
    words += [shlex.quote(f"--{key}={value}") for key, value in (config_dict or {}).items()]
    words += [shlex.quote(arg) for arg in cmd_args]
    return " ".join(words)
