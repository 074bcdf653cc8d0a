"""Headline tables in markdown files (the README), generated from a results folder.

A block starts with ``<!-- headline: docs/results/ml-100k -->`` (a folder of results.json files,
relative to the file's own folder) and ends with ``<!-- /headline -->``; everything between is
replaced by the table of that folder's runs: LSC4Rec and the single models it is measured
against, test metric as mean ± sample std over seeds, paired p against each single model.

    python -m recbole_lsc.leaderboard.headline README.md [more.md ...]

rewrites the blocks in place; ``tests/test_results_pages.py`` checks that they are up to date.
"""

import os
import re
import sys

from recbole_lsc.leaderboard.command import table_metrics
from recbole_lsc.leaderboard.run_files import find_results, label_runs
from recbole_lsc.leaderboard.table import SINGLE_ROLES, aggregate, cost_rows, seed_count
from recbole_lsc.files import write_text_atomic

BLOCK = re.compile(r"(<!-- headline: (?P<folder>[^ ]+) -->\n)(?P<body>.*?)(<!-- /headline -->)", re.DOTALL)
P_COLUMNS = {"srm": "p vs SRM", "srm_rerank": "p vs re-rank", "llm_stale": "p vs LLM stale", "llm_fresh": "p vs LLM fresh"}


def _cell(row, metric):
    mean = row["test"].get(metric)
    if mean is None:
        return "-"
    return f"{mean:.4f}" if len(row["seeds"]) < 2 else f"{mean:.4f} ± {row['test_std'][metric]:.4f}"


def headline_table(folder):
    """The markdown table of the runs under ``folder`` (see the module docstring)."""
    runs = label_runs(find_results([folder]))
    metric = table_metrics(runs[0]["results"]["config"])[0]
    rows = [row for row in aggregate(runs, metric) if row["role"] in ("lsc4rec", *SINGLE_ROLES)]
    spread = seed_count(len(row["seeds"]) for row in rows)
    lines = [f"| {'dataset | ' if len({r['dataset'] for r in rows}) > 1 else ''}method | backbone | "
             f"test {metric} (mean ± sample std, {spread}) | " + " | ".join(P_COLUMNS.values()) + " |"]
    lines.append("|" + "---|" * (lines[0].count("|") - 1))
    for row in rows:
        tests = row.get("paired_tests", {})
        p = [f"{tests[role]['wilcoxon_p']:.2g}" if role in tests else "-" for role in P_COLUMNS]
        dataset = f"{row['dataset']} | " if lines[0].startswith("| dataset") else ""
        lines.append(f"| {dataset}{row['method']} | {row['backbone']} | {_cell(row, metric)} | " + " | ".join(p) + " |")
    return "\n".join(lines + ["", *_epochs_lines(runs)]) + "\n"


EPOCH_COLUMNS = {"llm_epochs_per_seed": "cloud LLM", "srm_epochs_per_seed": "`srm`",
                 "device_srm_epochs_per_seed": "device SRM"}


def _epochs_lines(runs):
    """Each model's epochs trained and best epoch per seed, under the table it produced."""
    lines = []
    for cost in cost_rows(runs):
        models = [f"{name} {cost[key]}" for key, name in EPOCH_COLUMNS.items() if cost.get(key)]
        where = " / ".join(part for part in (cost["dataset"], cost["variant"], cost["backbone"]) if part != "-")
        lines.append(f"Epochs trained per seed, {where}: " + ("; ".join(models) or "not recorded") + ".")
    return lines


def refreshed(text, base):
    """``text`` with every headline block regenerated (folders relative to ``base``)."""
    def table(match):
        body = headline_table(os.path.join(base, match["folder"]))
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(table, text)


def main(argv=None):
    for path in (sys.argv[1:] if argv is None else argv):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        new = refreshed(text, os.path.dirname(os.path.abspath(path)))
        if new != text:
            write_text_atomic(path, new)
        print(f"{path}: {'updated' if new != text else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
