"""``recbole-lsc`` / ``run_recbole_lsc.py``: RecBole's flags, plugin errors as one line.

Usage: ``recbole-lsc --model=SASRec --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]``.
Every ``--key=value`` other than the three above is a config value (RecBole's rule).
``recbole-lsc benchmark ...`` runs a sweep into a leaderboard (``recbole_lsc.leaderboard.command``).
"""

import argparse
import sys

from recbole_lsc.arguments import config_overrides
from recbole_lsc.errors import LSCError
from recbole_lsc.leaderboard.command import main as benchmark
from recbole_lsc.quick_start import run_recbole_lsc


def parse_args(argv):
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="recbole-lsc",
        description="Run a RecBole or recbole-lsc model; extra --key=value pairs override the config.",
    )
    parser.add_argument("--model", "-m", default="LSC4Rec", help="model name (default: LSC4Rec)")
    parser.add_argument("--dataset", "-d", default="ml-100k", help="dataset name (default: ml-100k)")
    parser.add_argument("--config_files", default=None, help="space-separated yaml files")
    args, rest = config_overrides(parser, argv)
    files = args.config_files.split() if args.config_files else None
    return args.model, args.dataset, files, rest


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["benchmark"]:
            return benchmark(argv[1:])
        model, dataset, files, overrides = parse_args(argv)
        run_recbole_lsc(model=model, dataset=dataset, config_file_list=files, cmd_args=overrides)
    except LSCError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no results were written for the unfinished run (a benchmark sweep resumes when re-run)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
