"""Collaborative inference on the device: the candidates it fuses, the order it shows, the
features it reads before deciding to request (docs/method.md, "The boundary", "Fusion",
"Request").

Every function works on a batch of N users. A single device calls them with N = 1 for its own
user; the simulation calls them with every user of a phase; both compute the same numbers.
"""

import torch

from recbole_lsc.device.features import catalogue_features, feature_columns, list_features
from recbole_lsc.device.fusion import with_own_top


def candidate_set(received, srm_scores, catalogue=None):
    """``(ids, llm_scores, srm_scores)`` the device fuses: the ``received`` list (a
    :class:`~recbole_lsc.channel.CandidateList` with the SRM's ``srm_scores`` of it) or, when the
    device holds the item table (``catalogue``: its SRM's scores of every item), that list followed
    by its own top-C (:func:`~recbole_lsc.device.fusion.with_own_top`)."""
    if catalogue is None:
        return received.item_ids, received.scores, srm_scores
    return with_own_top(received.item_ids, received.scores, catalogue)


def shown_order(ids, fused):
    """The candidates ``ids`` as the user sees them: by fused score, ties in the cloud's order."""
    return ids.gather(1, torch.argsort(fused, dim=1, descending=True, stable=True))


def request_columns(stale, stale_srm, catalogue, newest, history_len, shown_ids, metric_by_rank):
    """Named request-feature columns (float64 numpy) of the ``stale`` lists.

    ``newest`` are the history items the cloud has not seen (right-padded with 0),
    ``history_len`` the fresh history lengths, ``shown_ids`` what each user is shown;
    ``metric_by_rank`` the ``valid_metric`` per 0-based rank. Catalogue features only when
    ``catalogue`` (the SRM's scores of the item table) is given.
    """
    columns = list_features(stale.scores, stale_srm, stale.item_ids, newest, history_len)
    if catalogue is not None:
        columns.update(catalogue_features(catalogue, stale.item_ids, shown_ids, metric_by_rank))
    return feature_columns(columns)
