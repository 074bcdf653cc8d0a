"""Target ranks: the one quantity every metric of the plugin is computed from.

With one target per user (RecBole's leave-one-out split), Hit@K, NDCG@K, MRR@K, Recall@K and
Precision@K are functions of the target's 0-based rank alone. Ranks are computed once per
(model state, phase, history view or candidate list); rows, per-user vectors, request-curve
points and validation scores all derive from them (:mod:`recbole_lsc.evaluation.metrics`).
A test checks the result against RecBole's own Evaluator.
"""

import torch


@torch.no_grad()
def catalogue_ranks(score_fn, interaction, batch_size, target_field):
    """0-based rank of each target over the whole catalogue: the items scored strictly above it.

    ``score_fn(batch) -> [B, n_items]``; item 0 (RecBole's padding id) is never ranked, as in
    RecBole's full-sort evaluation.
    """
    ranks = []
    for start in range(0, len(interaction), batch_size):
        batch = interaction[start : start + batch_size]
        scores = score_fn(batch).float().cpu()  # not written to: it may be the model's own tensor
        target = scores.gather(1, batch[target_field].cpu().unsqueeze(1))
        ranks.append((scores[:, 1:] > target).sum(1))  # column 0, padding, is never ranked
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def list_ranks(candidate_ids, scores, targets):
    """0-based rank of each target in its scored candidate list; ``C`` when it is not in it.

    Candidates are ordered by ``scores`` with a stable sort (ties keep the list's order).
    """
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    ranked = candidate_ids.gather(1, order)
    hit = ranked == targets.unsqueeze(1)
    return torch.where(hit.any(1), hit.float().argmax(1), torch.full_like(targets, candidate_ids.size(1)))
