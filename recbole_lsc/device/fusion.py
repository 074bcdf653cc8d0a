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
