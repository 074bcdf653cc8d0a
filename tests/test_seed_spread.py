"""The spread over seeds is the sample standard deviation (ddof = 1), hand-computed."""

import pytest

from recbole_lsc.evaluation.stats import mean_std, sample_std
from recbole_lsc.experiment.seeds import aggregate_curve, aggregate_rows


def test_sample_std_by_hand():
    # [1, 2, 3, 4]: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, 5 / 3 -> sqrt = 1.290994
    assert sample_std([1, 2, 3, 4]) == pytest.approx(1.2909944, abs=1e-6)
    assert sample_std([0.1, 0.3]) == pytest.approx(0.1414214, abs=1e-6)  # population std would be 0.1
    assert sample_std([0.7]) == 0.0  # one seed: 0, not NaN


def test_mean_std_reports_the_sample_std_per_key():
    mean, std = mean_std([{"a": 1, "b": 5.0}, {"a": 2, "b": 5.0}, {"a": 3, "b": 5.0}, {"a": 4, "b": 5.0}])
    assert mean == {"a": 2.5, "b": 5.0} and std == {"a": 1.290994, "b": 0.0}
    assert mean_std([{"a": 0.25}]) == ({"a": 0.25}, {"a": 0.0})


def test_rows_and_curves_over_seeds_use_the_sample_std():
    def run(value, realized):
        return {"rows": [{"name": "x", "role": "lsc4rec", "valid": {"m": value}, "test": {"m": value},
                          "realized": realized}],
                "curve": [{"device_catalogue": "full", "policy": "oracle", "rho": 0.5, "realized": realized,
                           "test": {"m": value}}]}
    runs = [run(v, r) for v, r in ((1.0, 0.2), (2.0, 0.3), (3.0, 0.4), (4.0, 0.3))]
    row = aggregate_rows(runs)[0]
    assert row["test"] == {"m": 2.5} and row["test_std"] == {"m": 1.290994} and row["valid_std"] == {"m": 1.290994}
    point = aggregate_curve(runs)[0]
    assert point["test_std"] == {"m": 1.290994} and point["rho"] == 0.5 and point["realized"] == pytest.approx(0.3)
