"""Fusion of the LLM's and the SRM's scores of one candidate list (docs/method.md, "Fusion").

``final_j = alpha * norm(llm)_j + (1 - alpha) * norm(srm)_j`` over the C candidates of a
user, with two normalisations:

* ``rank``: ``1 - r_j / C`` where ``r_j`` is the candidate's 0-based rank under that
  model's scores (the paper's code), insensitive to score scale;
* ``prob``: softmax over the candidate list (calibrated scores keep their margins).

Candidates are kept in the LLM's order and every ranking uses a stable sort, so ties in the
fused score go to the LLM's order: ``alpha = 1`` reproduces the LLM list exactly and
``alpha = 0`` gives the SRM's re-ranking of it.
"""

import torch

FUSION_NORMS = ("rank", "prob")
ALPHA_GRID = tuple(round(a * 0.1, 1) for a in range(11))


def ranks(scores):
    """0-based rank of every column within its row (stable: ties keep column order)."""
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    out = torch.empty_like(order)
    return out.scatter_(1, order, torch.arange(scores.size(1), device=scores.device).expand_as(order))


def normalise(scores, norm):
    """Row-wise normalisation of ``scores [N, C]``."""
    if norm == "prob":
        return torch.softmax(scores, dim=1)
    if norm == "rank":
        return 1.0 - ranks(scores).float() / scores.size(1)
    raise ValueError(f"fusion_norm must be one of {FUSION_NORMS}, got '{norm}'")


def fuse(llm_scores, srm_scores, alpha, norm):
    """Fused scores ``[N, C]`` of candidates listed in the LLM's order (best first)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"fusion alpha must be in [0, 1], got {alpha}")
    return alpha * normalise(llm_scores, norm) + (1.0 - alpha) * normalise(srm_scores, norm)


def with_own_top(cloud_ids, cloud_llm, catalogue_scores):
    """The candidate set of a device that holds the whole item table: the cloud's list followed
    by the device's own top-C items the cloud did not propose.

    Returns ``(ids [N, 2C], llm_scores [N, 2C], srm_scores [N, 2C])``. An item the cloud did not
    propose gets the list's lowest LLM score (the floor: the LLM ranked it below its whole
    list); with the stable sort of ``ranks`` the cloud's items keep precedence on ties, so
    alpha = 1 still gives the cloud's list first, and alpha = 0 the device's own top-C.
    """
    size = cloud_ids.size(1)
    catalogue = catalogue_scores.clone()
    catalogue[:, 0] = -torch.inf  # padding is not an item
    own = catalogue.topk(min(2 * size, catalogue.size(1) - 1), dim=1).indices
    proposed = (own.unsqueeze(2) == cloud_ids.unsqueeze(1)).any(2)
    fresh_first = torch.argsort(proposed.int(), dim=1, stable=True)[:, :size]  # at most C are proposed
    extra = own.gather(1, fresh_first)
    ids = torch.cat([cloud_ids, extra], dim=1)
    floor = cloud_llm.min(1, keepdim=True).values.expand(-1, extra.size(1))
    return ids, torch.cat([cloud_llm, floor], dim=1), catalogue_scores.gather(1, ids)
