"""The cloud seen from a device over HTTP: a :class:`~recbole_lsc.channel.CandidateSource`
that calls the candidate service (:mod:`recbole_lsc.cloud.service`) with httpx.

Items travel as the dataset's item tokens (the ids of the atomic files), never as internal
ids, so a device and a cloud built separately agree on what an item is. One keep-alive
connection per instance (``httpx.Client``), TCP_NODELAY, and one timeout that bounds every
phase of a call; any failure (refused, timed out, an error answer) raises
:class:`~recbole_lsc.device.client.CloudUnavailable`. Each call's latency and body bytes up and
down are recorded in ``calls`` for the replay benchmark.
"""

import socket
import time

import httpx
import torch

from recbole_lsc.channel import CandidateList
from recbole_lsc.device.client import CloudUnavailable

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


class HttpCloud:
    """Candidate lists from ``url`` (e.g. ``http://127.0.0.1:8000``).

    Args:
        url: the service's base URL.
        item_tokens: the device's item table, ``item_tokens[id]`` = token (index 0 = padding).
        timeout: seconds a call may take in all, connect included.
        token: the bearer token the service expects, or None.
    """

    def __init__(self, url, item_tokens, timeout=1.0, token=None):
        self.item_tokens = list(item_tokens)
        self.item_ids = {token_: index for index, token_ in enumerate(self.item_tokens)}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(timeout),
                                   transport=httpx.HTTPTransport(socket_options=NODELAY))
        self.calls = []  # (seconds, bytes up, bytes down, ok)

    def close(self):
        self.client.close()

    def candidates(self, item_seq, item_len, k):
        if len(item_seq) != 1:
            raise ValueError("HttpCloud answers one history per call (a device asks for its own user)")
        history = [self.item_tokens[int(item)] for item in item_seq[0, : int(item_len[0])]]
        started = time.perf_counter()
        try:
            response = self.client.post("/candidates", json={"history": history, "k": int(k)})
            response.raise_for_status()
            answer = response.json()
        except (httpx.HTTPError, ValueError) as err:
            self.calls.append((time.perf_counter() - started, 0, 0, False))
            raise CloudUnavailable(str(err)) from None
        self.calls.append((time.perf_counter() - started, len(response.request.content), len(response.content), True))
        return CandidateList(torch.tensor([[self.item_ids[token_] for token_ in answer["items"]]]),
                             torch.tensor([answer["scores"]], dtype=torch.float32), answer["model_id"],
                             torch.tensor([answer["history_len"]]))
