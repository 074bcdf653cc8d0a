"""PNG figures of a sweep: request curves per dataset x backbone, a bar chart per dataset."""

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from recbole_lsc.evaluation.stats import sample_std  # noqa: E402
from recbole_lsc.files import write_atomic  # noqa: E402
from recbole_lsc.leaderboard.table import seed_count  # noqa: E402
from recbole_lsc.results import point_setting  # noqa: E402

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


def _curve_groups(payloads, device_catalogue):
    """``{(policy, rho): [the seeds' curve points]}``, sorted by policy and rho."""
    points = {}
    for payload in payloads:
        for point in payload["request_curve"]:
            if device_catalogue in (None, point_setting(point)):
                points.setdefault((point["policy"], point["rho"]), []).append(point)
    return dict(sorted(points.items()))


def mean_curve(payloads, device_catalogue=None):
    """``{policy: (rhos, [the seeds' test dicts at each rho])}`` from several seeds' results
    (the points of one ``device_catalogue`` setting when given)."""
    curves = {}
    for (policy, rho), points in _curve_groups(payloads, device_catalogue).items():
        curves.setdefault(policy, ([], []))
        curves[policy][0].append(rho)
        curves[policy][1].append([point["test"] for point in points])
    return curves


def curve_points(payloads, metric, device_catalogue=None):
    """The points a request-curve plot draws: ``{policy: {"rho", "realized", "mean", "std", "seeds"}}``,
    each a list over the policy's nominal ratios ``rho`` (ascending).

    ``realized`` is the mean over seeds of the realised test request ratio, the x of the point (the
    oracle requests only users with a positive gain, so its realised ratio can be below rho; results
    written without ``realized`` fall back to rho). ``mean`` and ``std`` are the mean and sample std
    (ddof = 1; 0.0 for one seed) over seeds of test ``metric``; ``seeds`` counts the seeds.
    """
    curves = {}
    for (policy, rho), points in _curve_groups(payloads, device_catalogue).items():
        values = [point["test"][metric] for point in points]
        curve = curves.setdefault(policy, {"rho": [], "realized": [], "mean": [], "std": [], "seeds": []})
        curve["rho"].append(rho)
        curve["realized"].append(float(np.mean([point.get("realized", rho) for point in points])))
        curve["mean"].append(float(np.mean(values)))
        curve["std"].append(sample_std(values))
        curve["seeds"].append(len(values))
    return curves


def request_curve_plot(payloads, metric, title, path, device_catalogue=None):
    """Metric vs realised request ratio for every policy; never/always and the SRM as horizontal lines.

    Every point is drawn at its realised test request ratio (mean over seeds; see ``curve_points``),
    not at the nominal rho. Returns the Axes drawn (its figure is closed once saved), for inspection.
    """
    curves = curve_points(payloads, metric, device_catalogue)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    band_seeds = []
    for policy, curve in curves.items():
        style = POLICY_STYLE.get(policy, {})
        label = f"{policy} (ceiling)" if policy == "oracle" else policy
        x, mean, std = curve["realized"], np.array(curve["mean"]), np.array(curve["std"])
        ax.plot(x, mean, label=label, linewidth=1.5, markersize=4, **style)
        if max(curve["seeds"]) > 1 and policy != "oracle":  # sample std over seeds as a light band
            ax.fill_between(x, mean - std, mean + std, color=style.get("color"), alpha=0.08)
            band_seeds += curve["seeds"]
    # rho 0 / 1 are never / always for every policy but the oracle (which requests only users who gain)
    reference = next((curve for policy, curve in curves.items() if policy != "oracle"), None)
    for rho, name, style in ((0.0, "never request", "--"), (1.0, "always request", "-.")):
        if reference and rho in reference["rho"]:
            ax.axhline(reference["mean"][reference["rho"].index(rho)], color="tab:green", linestyle=style,
                       linewidth=1, label=name)
    srm = [row["test"][metric] for payload in payloads for row in payload["results"] if row["role"] == "srm"]
    if srm:
        ax.axhline(np.mean(srm), color="tab:purple", linestyle=":", linewidth=1, label="SRM, full catalogue")
    ax.set_xlabel("realised request ratio (share of test users asking the cloud for a fresh list; "
                  "mean over seeds)")
    band = f"; band: ± sample std over {seed_count(band_seeds)}" if band_seeds else ""
    ax.set_ylabel(f"test {metric} (mean over seeds{band})")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(fig, path)
    return ax


def _bar_label(row):
    tags = [tag for tag in (row.get("variant"), None if row["backbone"] == "-" else row["backbone"]) if tag]
    return f"{row['method']} [{', '.join(tags)}]" if tags else row["method"]


def bar_chart(rows, metric, title, path):
    """Mean test metric (error bar: sample std, ddof = 1, over seeds) of every leaderboard row of one dataset."""
    rows = sorted(rows, key=lambda row: row["test"].get(metric, 0.0))
    labels = [_bar_label(row) for row in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    colors = ["tab:red" if row["role"] == "lsc4rec" else "tab:gray" for row in rows]
    ax.barh(labels, [row["test"].get(metric, 0.0) for row in rows],
            xerr=[row["test_std"].get(metric, 0.0) for row in rows], color=colors, capsize=2)
    ax.set_xlabel(f"test {metric} (mean ± sample std over {seed_count(len(row['seeds']) for row in rows)})")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    _save(fig, path)
