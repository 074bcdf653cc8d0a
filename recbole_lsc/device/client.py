"""A device: its SRM, fusion weights and request policy, a cached candidate list per user, and
a cloud it reaches through a :class:`~recbole_lsc.channel.CandidateSource` (in process, or
over HTTP with :class:`~recbole_lsc.device.http_cloud.HttpCloud`).

It computes exactly what the simulation computes for one user (the batch functions of
:mod:`recbole_lsc.device.inference` with N = 1), so a replay can be checked against it. When
the cloud fails (down, slow past the timeout, an error answer, a request shed under load) the
device keeps serving the list it has and counts the failure; it never waits longer than the
source's timeouts allow.
"""

import threading
from dataclasses import dataclass

import numpy as np
import torch
from recbole.data.interaction import Interaction

from recbole_lsc.device.fusion import fuse
from recbole_lsc.device.inference import StaleHistoryScores, candidate_set, request_columns, shown_order


class CloudUnavailable(Exception):
    """The cloud did not answer in time, or answered with an error: the device carries on."""


class CloudBusy(CloudUnavailable):
    """The cloud shed the request under load (its queue was full, or the deadline passed before
    it got there): for the device a timeout like any other, counted apart as well."""


@dataclass
class Recommendation:
    """What the device shows one user: ``item_ids`` ``[1, M]`` with their fused ``scores``."""

    item_ids: torch.Tensor
    scores: torch.Tensor
    requested: bool  # the policy asked for a fresh list
    fresh: bool  # ... and got it (False: the cached list was shown)


class DeviceClient:
    """One device (or many devices sharing a model): see the module docstring.

    Args:
        srm: the trained :class:`~recbole_lsc.device.srm.DeviceSRM` (weights from the bundle).
        bundle: its :class:`~recbole_lsc.device.bundle.DeviceBundle`.
        cloud: a ``CandidateSource``; raises :class:`CloudUnavailable` when it cannot answer.
    """

    def __init__(self, srm, bundle, cloud):
        self.srm, self.bundle, self.cloud = srm.eval(), bundle, cloud
        self.metric_by_rank = np.asarray(bundle.metric_by_rank, dtype=np.float64)
        self._cached = {}  # user -> (CandidateList, history length it was built from)
        self._lock = threading.Lock()
        self.failures = 0  # calls that gave no list, whatever the reason
        self.shed = 0  # ... of which the cloud shed under load (CloudBusy)

    def _fetch(self, history):
        """The cloud's list for ``history``; only the newest items the cloud reads are sent."""
        sent = np.asarray(history, dtype=np.int64)[-self.bundle.cloud_history:]
        seq = torch.as_tensor(sent).view(1, -1)
        return self.cloud.candidates(seq, torch.tensor([seq.size(1)]), self.bundle.candidate_num)

    def _failed(self, err):
        """Count a call that gave no list; one the cloud shed under load also in ``shed``."""
        with self._lock:
            self.failures += 1
            self.shed += int(isinstance(err, CloudBusy))

    def receive(self, user, history):
        """Ask the cloud for ``user``'s list from ``history`` (item ids, oldest first) and cache it;
        True when a list arrived."""
        try:
            received = self._fetch(history)
        except CloudUnavailable as err:
            self._failed(err)
            return False
        self._cached[user] = (received, len(history))
        return True

    def has_list(self, user):
        return user in self._cached

    def cloud_list(self, user):
        """The cloud list ``user``'s last recommendation was fused from (the fresh one when it
        arrived): what tells the cloud's items of a shown list from the device's own top-C."""
        return self._cached[user][0]

    def _interaction(self, user, history):
        fields, max_len = self.srm.fields, self.srm.max_len
        kept = np.asarray(history[-max_len:], dtype=np.int64)
        seq = torch.zeros(1, max_len, dtype=torch.long)
        seq[0, : len(kept)] = torch.from_numpy(kept)
        return Interaction({fields["user"]: torch.tensor([user]), fields["item"]: torch.zeros(1, dtype=torch.long),
                            fields["item_seq"]: seq, fields["item_seq_len"]: torch.tensor([max(len(kept), 1)])})

    @torch.no_grad()
    def _scores(self, interaction, received, catalogue):
        if catalogue is not None:
            return catalogue.gather(1, received.item_ids)
        return self.srm.candidate_scores(interaction, received.item_ids)

    def _shown(self, received, srm_scores, catalogue, alpha):
        ids, llm, srm = candidate_set(received, srm_scores, catalogue)
        fused = fuse(llm, srm, alpha, self.bundle.fusion_norm)
        return ids, fused

    @torch.no_grad()
    def recommend(self, user, history):
        """The list ``user`` is shown after its fresh ``history``: the cached list re-ranked and
        fused, or a fresh list when the policy asks and the cloud answers."""
        stale, sent = self._cached[user]
        interaction = self._interaction(user, history)
        catalogue = self.srm.catalogue_scores(interaction) if self.bundle.device_catalogue == "full" else None
        stale_srm = self._scores(interaction, stale, catalogue)
        ids, fused = self._shown(stale, stale_srm, catalogue, self.bundle.alpha_stale)
        newest = torch.as_tensor(np.asarray(history[sent:], dtype=np.int64)).view(1, -1)
        then_interaction = self._interaction(user, history[:sent])
        then = StaleHistoryScores.of(lambda item_ids: self.srm.candidate_scores(then_interaction, item_ids),
                                     stale.item_ids, newest)
        columns = request_columns(stale, stale_srm, then, catalogue, newest, torch.tensor([len(history)]),
                                  shown_order(ids, fused), self.metric_by_rank)
        if not self.bundle.request.requests(columns, np.array([user]), np.array([len(history)]))[0]:
            return Recommendation(ids, fused, requested=False, fresh=False)
        try:
            received = self._fetch(history)
        except CloudUnavailable as err:
            self._failed(err)
            return Recommendation(ids, fused, requested=True, fresh=False)
        self._cached[user] = (received, len(history))
        ids, fused = self._shown(received, self._scores(interaction, received, catalogue), catalogue,
                                 self.bundle.alpha_fresh)
        return Recommendation(ids, fused, requested=True, fresh=True)
