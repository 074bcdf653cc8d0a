"""A RecBole model run through the plugin gives exactly stock RecBole's metrics."""

import os

import pytest
import yaml

from recbole_lsc.config import PROPERTIES_DIR
from recbole_lsc.quick_start import run_recbole_lsc


def plugin_defaults(model):
    """The values the plugin's yaml adds, so stock RecBole runs the very same config."""
    values = {}
    for path in (os.path.join(PROPERTIES_DIR, "overall.yaml"), os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")):
        with open(path, encoding="utf-8") as handle:
            values.update(yaml.safe_load(handle) or {})
    return values


@pytest.mark.parametrize("model", ["SASRec", "GRU4Rec"])
def test_plugin_matches_stock_recbole(model, tiny_config, monkeypatch):
    from recbole.quick_start import run_recbole

    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)

    shared = dict(plugin_defaults(model), **tiny_config)
    shared.update(model=model, dataset="mltiny", hidden_size=16, embedding_size=16,
                  MAX_ITEM_LIST_LENGTH=10, train_neg_sample_args=None, topk=[5, 10], metrics=["Hit", "NDCG", "MRR"],
                  valid_metric="NDCG@10")
    # Stock RecBole reloads the pickled checkpoint it just wrote with torch.load, which torch
    # >= 2.6 refuses unless told otherwise; only the stock side is told, the plugin runs without.
    with monkeypatch.context() as stock_only:
        stock_only.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        stock = run_recbole(model=model, dataset="mltiny", config_dict=dict(shared), saved=True)
    ours = run_recbole_lsc(model=model, dataset="mltiny", config_dict=dict(shared), saved=True)

    row = ours["rows"][0]
    expected = {key: round(float(value), 6) for key, value in stock["test_result"].items()}
    assert row["role"] == "srm"
    assert row["test"] == expected
    assert row["valid"] == {key: round(float(v), 6) for key, v in stock["best_valid_result"].items()}
    assert row["test"]["ndcg@10"] > 0  # a real ranking, not an empty result
    assert os.path.isfile(ours["path"])
