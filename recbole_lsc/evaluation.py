"""Full-catalogue evaluation of any score matrix through RecBole's Collector and Evaluator.

RecBole's Trainer only evaluates its own dataloaders; the plugin also scores histories it
builds itself (stale inputs, candidate lists, fused scores). Scores for the catalogue go
through the very same metric code, so every row of a results table is comparable.
"""

import torch
from recbole.evaluator import Collector, Evaluator


def mask_padding(scores):
    """Item 0 is RecBole's padding id: never recommended."""
    scores = scores.clone()
    scores[:, 0] = -torch.inf
    return scores


class FullRankingEvaluator:
    """Accumulate ``(scores [B, n_items], targets [B])`` batches; ``result()`` gives RecBole metrics."""

    def __init__(self, config):
        self.collector = Collector(config)
        self.evaluator = Evaluator(config)

    def add(self, scores, targets):
        scores = mask_padding(scores.detach().float().cpu())
        rows = torch.arange(len(targets))
        self.collector.eval_batch_collect(scores, None, rows, targets.cpu())

    def result(self):
        return dict(self.evaluator.evaluate(self.collector.get_data_struct()))


def evaluate_scorer(config, score_fn, interaction, batch_size, target_field):
    """Metrics of ``score_fn(batch) -> [B, n_items]`` over ``interaction`` in batches."""
    evaluator = FullRankingEvaluator(config)
    for start in range(0, len(interaction), batch_size):
        batch = interaction[start : start + batch_size]
        with torch.no_grad():
            evaluator.add(score_fn(batch), batch[target_field])
    return evaluator.result()
