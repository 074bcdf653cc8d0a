"""The one evaluation path (target ranks -> metrics) against RecBole's own Collector and Evaluator."""

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction
from recbole.evaluator import Collector, Evaluator

from recbole_lsc.config import LSCConfig
from recbole_lsc.evaluation.metrics import metric_by_rank, metric_values, summary
from recbole_lsc.evaluation.ranks import catalogue_ranks, list_ranks


@pytest.fixture
def config():
    return LSCConfig("SASRec", "ml-100k", config_dict={"metrics": ["Hit", "NDCG", "MRR", "Precision", "Recall"],
                                                        "topk": [1, 5, 10]})


def recbole_metrics(config, scores, targets):
    """What RecBole's Evaluator reports for full-catalogue ``scores`` (padding masked, as its trainer does)."""
    scores = scores.clone().float()
    scores[:, 0] = -torch.inf
    collector = Collector(config)
    collector.eval_batch_collect(scores, None, torch.arange(len(targets)), targets)
    return dict(Evaluator(config).evaluate(collector.get_data_struct()))


def test_catalogue_ranks_give_recboles_rows(config):
    torch.manual_seed(0)
    scores = torch.randn(300, 80)  # continuous: no ties between a target and another item
    targets = torch.randint(1, 80, (300,))
    batch = Interaction({"item": targets, "row": torch.arange(300)})
    ranks = catalogue_ranks(lambda b: scores[b["row"]], batch, 64, "item")
    by_hand = (scores[:, 1:] > scores.gather(1, targets.unsqueeze(1))).sum(1)  # item 0 never ranks
    assert torch.equal(ranks, by_hand)
    assert summary(ranks, config) == recbole_metrics(config, scores, targets)


def test_list_ranks_give_recboles_rows_for_candidate_lists(config):
    torch.manual_seed(1)
    ids = torch.stack([torch.randperm(40)[:10] + 1 for _ in range(50)])
    scores = torch.randn(50, 10)
    targets = torch.where(torch.rand(50) < 0.7, ids[torch.arange(50), torch.randint(0, 10, (50,))],
                          torch.tensor(45))  # item 45 is never a candidate: a miss
    full = torch.full((50, 60), -torch.inf)
    full.scatter_(1, ids, scores)  # items outside the list cannot be recommended
    assert summary(list_ranks(ids, scores, targets), config) == recbole_metrics(config, full, targets)


def test_summary_rounds_as_recbole_and_metric_values_are_per_user(config):
    ranks = torch.tensor([0, 1, 2, 50])
    rows = summary(ranks, config)
    assert rows["hit@5"] == 0.75 and rows["mrr@5"] == round((1 + 1 / 2 + 1 / 3) / 4, 4)
    assert rows["ndcg@10"] == round((1 + 1 / np.log2(3) + 1 / np.log2(4)) / 4, config["metric_decimal_place"])
    values = metric_values(ranks, config)  # valid_metric: NDCG@10
    assert values.tolist() == pytest.approx([1, 1 / np.log2(3), 1 / np.log2(4), 0])
    assert metric_by_rank(config, 12).tolist() == pytest.approx([1 / np.log2(r + 2) for r in range(10)] + [0, 0])
