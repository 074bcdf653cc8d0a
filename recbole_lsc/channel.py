"""What crosses between the cloud and the device (docs/method.md, "The boundary").

The device sends histories; the cloud answers with one :class:`CandidateList` per history.
Nothing else travels: the device never sees the LLM's weights or its scores of items outside
the list, and the cloud never sees the device's model. Any cloud (the in-process LLM of
:mod:`recbole_lsc.cloud.source`, or a remote service) is a :class:`CandidateSource`.
"""

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass(frozen=True)
class CandidateList:
    """The cloud's answer for ``N`` histories.

    Attributes:
        item_ids: ``[N, C]`` item ids, best first (the LLM's order).
        scores: ``[N, C]`` the LLM's log-probabilities of those items.
        model_id: which cloud model produced the lists.
        history_len: ``[N]`` how many history items each list was built from.
    """

    item_ids: torch.Tensor
    scores: torch.Tensor
    model_id: str
    history_len: torch.Tensor

    def __post_init__(self):
        if self.item_ids.shape != self.scores.shape or self.item_ids.dim() != 2:
            raise ValueError(f"item_ids {tuple(self.item_ids.shape)} and scores {tuple(self.scores.shape)} must be "
                             "the same [N, C] shape")
        if len(self.history_len) != len(self.item_ids):
            raise ValueError(f"history_len has {len(self.history_len)} entries for {len(self.item_ids)} lists")

    def __len__(self):
        return len(self.item_ids)

    @property
    def size(self):
        """C, the number of candidates per list."""
        return self.item_ids.size(1)

    def to(self, device):
        return CandidateList(self.item_ids.to(device), self.scores.to(device), self.model_id, self.history_len)

    def select(self, rows):
        """The lists of ``rows`` (an index tensor or a boolean mask)."""
        return CandidateList(self.item_ids[rows], self.scores[rows], self.model_id, self.history_len[rows])


def concat_lists(parts):
    """One :class:`CandidateList` of the rows of ``parts`` (same model, same C), in order."""
    model_ids = {part.model_id for part in parts}
    if len(model_ids) != 1:
        raise ValueError(f"cannot join lists of different models: {sorted(model_ids)}")
    return CandidateList(torch.cat([part.item_ids for part in parts]), torch.cat([part.scores for part in parts]),
                         parts[0].model_id, torch.cat([part.history_len for part in parts]))


# Over HTTP (recbole_lsc.cloud.service and recbole_lsc.device.http_cloud), a request also
# carries the caller's deadline, and an overloaded service sheds requests with these statuses.
DEADLINE_HEADER = "X-Request-Deadline"  # unix seconds; the service drops a request still queued then
QUEUE_FULL_STATUS = 503  # refused at once (with Retry-After): the service's queue is full
DEADLINE_PASSED_STATUS = 504  # dropped unanswered: the deadline passed before the request's forward pass
SHED_STATUSES = (QUEUE_FULL_STATUS, DEADLINE_PASSED_STATUS)


class CandidateSource(Protocol):
    """A cloud: candidate lists for right-padded histories ``item_seq [N, L]``, ``item_len [N]``."""

    def candidates(self, item_seq: torch.Tensor, item_len: torch.Tensor, k: int) -> CandidateList:
        ...
