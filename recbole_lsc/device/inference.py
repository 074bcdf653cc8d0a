"""Collaborative inference on the device: the candidates it fuses, the order it shows, the
features it reads before deciding to request (docs/method.md, "The boundary", "Fusion",
"Request").

Every function works on a batch of N users. A single device calls them with N = 1 for its own
user; the simulation calls them with every user of a phase; both compute the same numbers.
"""

from dataclasses import dataclass

import torch

from recbole_lsc.device.features import catalogue_features, drift_features, feature_columns, list_features
from recbole_lsc.device.fusion import with_own_top


@dataclass
class StaleHistoryScores:
    """The SRM's logits from the history a stale list was built from (what the cloud had seen):
    of the list's items ``[N, C]`` and of the newest history items ``[N, g]`` (the ones the cloud
    had not seen, right-padded with 0). Both read only embeddings the device holds. A list built
    before any interaction has an empty stale history; RecBole's SRMs read the item at position
    length - 1, so such a history is read as one padding item."""

    list_items: torch.Tensor
    newest: torch.Tensor

    @classmethod
    def of(cls, score, list_ids, newest):
        """From ``score(ids) -> [N, K]`` (the SRM on the stale histories) of the list and the newest items."""
        scores = score(torch.cat([list_ids, newest.to(list_ids.dtype)], dim=1))
        return cls(scores[:, : list_ids.size(1)], scores[:, list_ids.size(1):])


def candidate_set(received, srm_scores, catalogue=None):
    """``(ids, llm_scores, srm_scores)`` the device fuses: the ``received`` list (a
    :class:`~recbole_lsc.channel.CandidateList` with the SRM's ``srm_scores`` of it) or, when the
    device holds the item table (``catalogue``: its SRM's scores of every item), that list followed
    by its own top-C (:func:`~recbole_lsc.device.fusion.with_own_top`)."""
    if catalogue is None:
        return received.item_ids, received.scores, srm_scores
    return with_own_top(received.item_ids, received.scores, catalogue)


def shown_positions(fused):
    """Positions of the candidates in the order the user sees them: by fused score, ties in the
    cloud's order (stable), so every caller shows one and the same order."""
    return torch.argsort(fused, dim=1, descending=True, stable=True)


def shown_order(ids, fused):
    """The candidates ``ids`` as the user sees them (:func:`shown_positions`)."""
    return ids.gather(1, shown_positions(fused))


def request_columns(stale, stale_srm, then, catalogue, newest, history_len, shown_ids, metric_by_rank):
    """Named request-feature columns (float64 numpy) of the ``stale`` lists.

    ``stale_srm`` are the SRM's scores of the lists from the fresh histories, ``then`` its
    :class:`StaleHistoryScores` from the histories the cloud built them from; ``newest`` are the
    history items the cloud has not seen (right-padded with 0), ``history_len`` the fresh history
    lengths, ``shown_ids`` what each user is shown; ``metric_by_rank`` the ``valid_metric`` per
    0-based rank. Catalogue features only when ``catalogue`` (the SRM's scores of the item table)
    is given.
    """
    columns = list_features(stale.scores, stale_srm, stale.item_ids, newest, history_len)
    columns.update(drift_features(stale_srm, then.list_items, newest, then.newest))
    if catalogue is not None:
        columns.update(catalogue_features(catalogue, stale.item_ids, shown_ids, metric_by_rank))
    return feature_columns(columns)
