"""PNG figures of a sweep: request curves per dataset x backbone, a bar chart per dataset."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recbole_lsc.files import write_atomic  # noqa: E402

POLICY_STYLE = {
    "learned": {"color": "tab:red", "marker": "o"},
    "consistency": {"color": "tab:blue", "marker": "s"},
    "top1_missing": {"color": "tab:orange", "marker": "D"},
    "regret": {"color": "tab:brown", "marker": "v"},
    "random": {"color": "tab:gray", "marker": "^"},
    "oracle": {"color": "black", "marker": "", "linestyle": ":"},
}


def _save(fig, path):
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def mean_curve(payloads, device_catalogue=None):
    """``{policy: (rhos, [the seeds' test dicts at each rho])}`` from several seeds' results
    (the points of one ``device_catalogue`` setting when given)."""
    points = {}
    for payload in payloads:
        for point in payload["request_curve"]:
            if device_catalogue in (None, point.get("device_catalogue")):
                points.setdefault((point["policy"], point["rho"]), []).append(point["test"])
    curves = {}
    for (policy, rho), tests in sorted(points.items()):
        curves.setdefault(policy, ([], []))
        curves[policy][0].append(rho)
        curves[policy][1].append(tests)
    return curves


def request_curve_plot(payloads, metric, title, path, device_catalogue=None):
    """Metric vs request ratio for every policy; never/always and the SRM as horizontal lines."""
    curves = mean_curve(payloads, device_catalogue)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for policy, (rhos, tests) in curves.items():
        values = np.array([[t[metric] for t in seed_tests] for seed_tests in tests])
        style = POLICY_STYLE.get(policy, {})
        label = f"{policy} (ceiling)" if policy == "oracle" else policy
        mean = values.mean(1)
        ax.plot(rhos, mean, label=label, linewidth=1.5, markersize=4, **style)
        if values.shape[1] > 1 and policy != "oracle":  # std over seeds as a light band
            ax.fill_between(rhos, mean - values.std(1), mean + values.std(1), color=style.get("color"), alpha=0.08)
    rhos, tests = next(iter(curves.values()))  # rho 0 / 1 are never / always for every policy
    for rho, name, style in ((0.0, "never request", "--"), (1.0, "always request", "-.")):
        if rho in rhos:
            value = np.mean([t[metric] for t in tests[rhos.index(rho)]])
            ax.axhline(value, color="tab:green", linestyle=style, linewidth=1, label=name)
    srm = [row["test"][metric] for payload in payloads for row in payload["results"] if row["role"] == "srm"]
    if srm:
        ax.axhline(np.mean(srm), color="tab:purple", linestyle=":", linewidth=1, label="SRM, full catalogue")
    ax.set_xlabel("request ratio (share of users asking the cloud for a fresh list)")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)


def _bar_label(row):
    tags = [tag for tag in (row.get("variant"), None if row["backbone"] == "-" else row["backbone"]) if tag]
    return f"{row['method']} [{', '.join(tags)}]" if tags else row["method"]


def bar_chart(rows, metric, title, path):
    """Mean test metric (error bar: std over seeds) of every leaderboard row of one dataset."""
    rows = sorted(rows, key=lambda row: row["test"].get(metric, 0.0))
    labels = [_bar_label(row) for row in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    colors = ["tab:red" if row["role"] == "lsc4rec" else "tab:gray" for row in rows]
    ax.barh(labels, [row["test"].get(metric, 0.0) for row in rows],
            xerr=[row["test_std"].get(metric, 0.0) for row in rows], color=colors, capsize=2)
    ax.set_xlabel(f"test {metric} (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
