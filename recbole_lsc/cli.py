"""``recbole-lsc`` / ``run_recbole_lsc.py``: RecBole's flags, plugin errors as one line.

Usage: ``recbole-lsc --model=SASRec --dataset=ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]``.
Every ``--key=value`` other than the three above is a config value (RecBole's rule).
``recbole-lsc benchmark ...`` runs a sweep into a leaderboard (``recbole_lsc.leaderboard.command``);
``recbole-lsc serve ...`` starts the cloud's candidate service and ``recbole-lsc replay ...`` replays
the test users through device clients against it (``recbole_lsc.deployment``);
``recbole-lsc recommend --run=DIR --user=U`` prints what a finished run's device shows
(``recbole_lsc.deployment.recommend``); ``recbole-lsc report PATH... --out DIR`` turns results.json
files into a results page (``recbole_lsc.leaderboard.report``); ``recbole-lsc tune --params_file=FILE ...``
searches hyper-parameters with RecBole's HyperTuning (``recbole_lsc.tuning``, docs/tuning.md).
"""

import sys

from recbole_lsc.arguments import model_arguments
from recbole_lsc.deployment.recommend import main as recommend
from recbole_lsc.errors import ConfigError, LSCError
from recbole_lsc.leaderboard.command import main as benchmark
from recbole_lsc.leaderboard.report import main as report
from recbole_lsc.quick_start import run_recbole_lsc
from recbole_lsc.tuning.command import main as tune

SERVE_EXTRA = ("fastapi", "starlette", "uvicorn", "httpx")


def deployment(command, argv):
    """``serve`` / ``replay``: imported only when asked for (they need the serve extra)."""
    try:
        from recbole_lsc.deployment import commands
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in SERVE_EXTRA:
            raise
        raise ConfigError(f"`recbole-lsc {command}` needs the serve extra ({err.name} is not installed): "
                          "pip install 'recbole-lsc[serve]' (or -e '.[serve]' in a checkout)") from None
    return {"serve": commands.serve_main, "replay": commands.replay_main}[command](argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["benchmark"]:
            return benchmark(argv[1:])
        if argv[:1] in (["serve"], ["replay"]):
            return deployment(argv[0], argv[1:])
        if argv[:1] == ["recommend"]:
            return recommend(argv[1:])
        if argv[:1] == ["report"]:
            return report(argv[1:])
        if argv[:1] == ["tune"]:
            return tune(argv[1:])
        model, dataset, files, overrides = model_arguments(argv)
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
