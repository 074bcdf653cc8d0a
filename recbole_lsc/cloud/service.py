"""The cloud as an HTTP service: candidate lists of a trained LLM (FastAPI, run by uvicorn).

``POST /candidates`` with ``{"history": [item tokens, oldest first], "k": C}`` answers
``{"items": [C tokens, best first], "scores": [their log-probabilities], "model_id": ...,
"model_version": ..., "history_len": items read}``; ``GET /health`` says what is served.
Concurrent requests are grouped for up to ``batch_window_ms`` (or ``max_batch`` requests) and
answered by one forward pass (:class:`MicroBatcher`). Every bad request gets a 4xx with one
line saying what to fix (401 without the bearer token when one is set, 413 over the size
limits, 400 for a body that is not JSON, 422 for unknown items, an empty history or a bad
``k``), and the service keeps running.
"""

import asyncio
import contextlib
import hmac
import json
import reprlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask: body bytes, history items, and ``k``."""

    max_body_bytes: int = 65536
    max_history: int = 1000
    max_k: int = 1000


class BadRequest(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status, self.message = status, message


class MicroBatcher:
    """Answers concurrent histories with one ``cloud.candidates`` call per micro-batch.

    A batch takes every request waiting when the worker is free (they queued while the previous
    batch ran: no wait at all when the service is idle), plus those arriving within
    ``window_s`` seconds (0: none), up to ``max_batch``; it is right-padded and run on one
    worker thread (the model is never run twice at once), and each request gets its own row.
    """

    def __init__(self, cloud, window_s=0.0, max_batch=64):
        self.cloud, self.window_s, self.max_batch = cloud, window_s, max_batch
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-batch")
        self.queue, self.task, self.batches, self.answered = None, None, 0, 0

    async def start(self):
        self.queue = asyncio.Queue()
        self.task = asyncio.create_task(self._loop())

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, history_ids, k):
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((history_ids, k, future))
        return await future

    async def _collect(self):
        """The next batch: the first waiting request, every request already waiting (they queued
        while the previous batch ran), then whatever arrives within the window."""
        batch = [await self.queue.get()]
        while len(batch) < self.max_batch and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        deadline = asyncio.get_running_loop().time() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    @torch.inference_mode()
    def _answer(self, batch):
        """One forward pass per distinct ``k`` in the batch (a device asks for its C, so usually
        one): ``[(item ids, scores, model id, history length) per request]``."""
        answers = [None] * len(batch)
        for k in sorted({k for _, k, _ in batch}):
            rows = [row for row, (_, wanted, _) in enumerate(batch) if wanted == k]
            histories = [batch[row][0] for row in rows]
            seq = torch.zeros(len(rows), max(map(len, histories)), dtype=torch.long)
            for index, history in enumerate(histories):
                seq[index, : len(history)] = torch.tensor(history, dtype=torch.long)
            lists = self.cloud.candidates(seq, torch.tensor([len(history) for history in histories]), k)
            for index, row in enumerate(rows):
                answers[row] = (lists.item_ids[index].tolist(), lists.scores[index].tolist(), lists.model_id,
                                int(lists.history_len[index]))
        return answers

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            self.batches, self.answered = self.batches + 1, self.answered + len(batch)
            try:
                lists = await loop.run_in_executor(self.executor, self._answer, batch)
            except Exception as err:  # the batch fails, the service does not
                logging.getLogger().exception("candidate batch failed")
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, _, future), answer in zip(batch, lists):
                if not future.done():
                    future.set_result(answer)


class CandidateRequests:
    """Checks one request against the item table and the limits; turns tokens into ids."""

    def __init__(self, item_tokens, max_history, mask_history, limits):
        self.item_tokens = list(item_tokens)
        self.item_ids = {token: index for index, token in enumerate(self.item_tokens) if index > 0}
        self.max_history, self.mask_history, self.limits = max_history, mask_history, limits

    def parse(self, body):
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # JSONDecodeError is a ValueError
            raise BadRequest(400, f"request body is not JSON this service reads ({err.__class__.__name__}: "
                                  f"{str(err)[:80]}); send " '{"history": [item tokens], "k": N}') from None
        if not isinstance(payload, dict) or not isinstance(payload.get("history"), list):
            raise BadRequest(422, 'expected a JSON object {"history": [item tokens, oldest first], "k": N}')
        return self._history(payload["history"]), self._k(payload.get("k"), payload["history"])

    def _history(self, history):
        if not history:
            raise BadRequest(422, "history is empty; send at least one item token")
        if not all(isinstance(token, str) or (isinstance(token, int) and not isinstance(token, bool))
                   for token in history):
            raise BadRequest(422, "history items must be item tokens (strings, or integers for numeric tokens)")
        if len(history) > self.limits.max_history:
            raise BadRequest(413, f"history has {len(history)} items; at most {self.limits.max_history}")
        unknown = [token for token in history if str(token) not in self.item_ids]
        if unknown:
            shown = ", ".join(_short(token) for token in unknown[:5])
            raise BadRequest(422, f"{len(unknown)} unknown item token(s) in history: {shown}; send tokens of the "
                                  "dataset's item_id column")
        return [self.item_ids[str(token)] for token in history][-self.max_history:]

    def _k(self, k, history):
        if k is None:
            raise BadRequest(422, 'k is missing; send {"history": [...], "k": N}')
        if isinstance(k, bool) or not isinstance(k, int):
            raise BadRequest(422, f"k must be an integer, got {_short(k)}")
        read = history[-self.max_history:]
        available = len(self.item_tokens) - 1 - (len(set(map(str, read))) if self.mask_history else 0)
        limit = min(self.limits.max_k, available)
        if not 1 <= k <= limit:
            raise BadRequest(422, f"k must be between 1 and {limit} for this history, got {_short(k)}")
        return k


_ECHO = reprlib.Repr()
_ECHO.maxstring = _ECHO.maxother = _ECHO.maxlong = 40


def _short(value):
    """``repr`` of an echoed value, cut short (a request may send anything)."""
    return _ECHO.repr(value)


async def _read_body(request, limit):
    """The request body, refused (413) as soon as it passes ``limit`` bytes: never read whole."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BadRequest(413, f"request body has {declared} bytes; at most {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"request body has more than {limit} bytes; at most {limit}")
    return bytes(body)


def _authorised(request, token):
    if token is None:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode("utf-8"), f"Bearer {token}".encode("utf-8"))


def create_app(cloud, item_tokens, model_version, token=None, limits=ServiceLimits(), batch_window_ms=0.0,
               max_batch=64):
    """The FastAPI app serving ``cloud`` (an :class:`~recbole_lsc.cloud.source.InProcessCloud`).

    ``item_tokens[id]`` is the dataset's token of item ``id``; ``token`` the bearer token
    requests must carry (None: no authentication).
    """
    batcher = MicroBatcher(cloud, batch_window_ms / 1000.0, max_batch)
    checks = CandidateRequests(item_tokens, cloud.max_history, cloud.llm.mask_history, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="recbole-lsc cloud", lifespan=lifespan)
    app.state.batcher = batcher

    def refuse(status, message):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_id": cloud.model_id, "model_version": model_version,
                "items": len(item_tokens) - 1, "max_history": cloud.max_history, "limits": limits.__dict__,
                "auth": token is not None, "answered": batcher.answered, "forward_passes": batcher.batches}

    @app.post("/candidates")
    async def candidates(request: Request):
        if not _authorised(request, token):
            return refuse(401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'")
        try:
            history, k = checks.parse(await _read_body(request, limits.max_body_bytes))
        except BadRequest as err:
            return refuse(err.status, err.message)
        except Exception as err:  # noqa: BLE001 - whatever a request sends, the service answers and stays up
            logging.getLogger().exception("unexpected error while reading a request")
            return refuse(400, f"the request could not be read ({err.__class__.__name__}); send "
                               '{"history": [item tokens], "k": N}')
        try:
            ids, scores, model_id, history_len = await batcher.submit(history, k)
        except Exception as err:  # noqa: BLE001 - answered, logged by the batcher
            return refuse(500, f"the cloud failed on this batch ({err.__class__.__name__}); try again")
        # a ready JSONResponse skips FastAPI's per-element encoder: the answer is plain JSON already
        return JSONResponse({"items": [item_tokens[item] for item in ids], "scores": scores, "model_id": model_id,
                             "model_version": model_version, "history_len": history_len})

    return app
