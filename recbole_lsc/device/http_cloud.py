"""The cloud seen from a device over HTTP: a :class:`~recbole_lsc.channel.CandidateSource`
that calls the candidate service (:mod:`recbole_lsc.cloud.service`) with httpx.

Items travel as the dataset's item tokens (the ids of the atomic files), never as internal
ids, so a device and a cloud built separately agree on what an item is. One keep-alive
connection per instance (``httpx.Client``), TCP_NODELAY, and a timeout on every phase of a
call (connect, send, each read); any failure (refused, timed out, an error answer) raises
:class:`~recbole_lsc.device.client.CloudUnavailable`, and a request the overloaded service shed
(503: its queue was full; 504: the deadline passed first) the subclass
:class:`~recbole_lsc.device.client.CloudBusy`. Every call carries its deadline, ``timeout``
seconds after it starts (header ``X-Request-Deadline``, unix seconds: device and cloud clocks
are assumed synchronised), so the service does not spend a forward pass on an answer the device
no longer waits for. Each call's latency and body bytes up and down are recorded in ``calls``
for the replay benchmark.
"""

import socket
import time
from typing import NamedTuple

import httpx
import torch

from recbole_lsc.channel import DEADLINE_HEADER, SHED_STATUSES, CandidateList
from recbole_lsc.device.client import CloudBusy, CloudUnavailable

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class Call(NamedTuple):
    """One HTTP call: its seconds, body bytes up and down, whether it gave a list, its status."""

    seconds: float
    bytes_up: int
    bytes_down: int
    ok: bool
    status: int = None


class HttpCloud:
    """Candidate lists from ``url`` (e.g. ``http://127.0.0.1:8000``).

    Args:
        url: the service's base URL.
        item_tokens: the device's item table, ``item_tokens[id]`` = token (index 0 = padding).
        timeout: seconds each phase of a call (connect, send, each read) may take.
        token: the bearer token the service expects, or None.
    """

    def __init__(self, url, item_tokens, timeout=1.0, token=None):
        self.item_tokens = list(item_tokens)
        self.item_ids = {token_: index for index, token_ in enumerate(self.item_tokens)}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.client = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout),
                                   transport=httpx.HTTPTransport(socket_options=NODELAY))
        self.calls = []  # one Call per request

    def close(self):
        self.client.close()

    def candidates(self, item_seq, item_len, k):
        if len(item_seq) != 1:
            raise ValueError("HttpCloud answers one history per call (a device asks for its own user)")
        history = [self.item_tokens[int(item)] for item in item_seq[0, : int(item_len[0])]]
        started, status = time.perf_counter(), None
        try:
            response = self.client.post("/candidates", json={"history": history, "k": int(k)},
                                        headers={DEADLINE_HEADER: f"{time.time() + self.timeout:.3f}"})
            status = response.status_code
            response.raise_for_status()
            lists = self._answer(response.json(), k)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as err:
            self.calls.append(Call(time.perf_counter() - started, 0, 0, False, status))
            unavailable = CloudBusy if status in SHED_STATUSES else CloudUnavailable
            raise unavailable(_reason(err, status)) from None
        self.calls.append(Call(time.perf_counter() - started, len(response.request.content), len(response.content),
                               True, status))
        return lists

    def _answer(self, answer, k):
        """The service's JSON answer as a CandidateList; anything else raises ValueError."""
        items = [self.item_ids[token_] for token_ in answer["items"]]
        if len(items) != k or len(answer["scores"]) != k:
            raise ValueError(f"the cloud answered {len(items)} items for k={k}")
        return CandidateList(torch.tensor([items]), torch.tensor([answer["scores"]], dtype=torch.float32),
                             answer["model_id"], torch.tensor([answer["history_len"]]))


def _reason(err, status):
    if status is not None and status >= 400:
        return f"the cloud answered {status}"
    return f"{err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}"
