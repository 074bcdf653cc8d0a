"""The cloud as an HTTP service: candidate lists of a trained LLM (FastAPI, run by uvicorn).

``POST /candidates`` with ``{"history": [item tokens, oldest first], "k": C}`` answers
``{"items": [C tokens, best first], "scores": [their log-probabilities], "model_id": ...,
"model_version": ..., "history_len": items read}``; ``GET /health`` says what is served.
Concurrent requests are grouped for up to ``batch_window_ms`` (or ``max_batch`` requests) and
answered by one forward pass (:class:`MicroBatcher`). Every bad request gets a 4xx with one
line saying what to fix (401 without the bearer token when one is set, 413 over the size
limits, 400 for a body that is not JSON or a deadline that is not a number, 422 for unknown
items, an empty history or a bad ``k``), and the service keeps running.

Overload is shed, not queued without end: at most ``max_queue`` requests wait for a forward
pass; one more is answered 503 at once, before its body is read, with ``Retry-After`` (whole seconds, from the recent
forward-pass time), and so is a request that would wait longer than ``max_latency_ms`` for its
answer (the passes ahead of it at the recent pass time; 0: no bound). A request may carry its caller's deadline (header ``X-Request-Deadline``,
unix seconds); when it has passed before the request's forward pass, the request is dropped
and answered 504. ``GET /metrics`` exposes the service's Prometheus metrics (:class:`ServiceMetrics`).
"""

import asyncio
import contextlib
import hmac
import json
import math
import reprlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from recbole_lsc.channel import DEADLINE_HEADER, DEADLINE_PASSED_STATUS, QUEUE_FULL_STATUS

# weight of the newest forward pass in the recent pass time that Retry-After is derived from
_RECENT_PASS_WEIGHT = 0.2


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


class Overloaded(Exception):
    """The queue is full, or the request could not be answered within the latency bound: it is
    refused before any work (503); ``retry_after`` is the whole number of seconds after which
    the queue has likely drained."""

    def __init__(self, retry_after):
        super().__init__(f"overloaded; retry after {retry_after} s")
        self.retry_after = retry_after


class DeadlineExpired(Exception):
    """The caller's deadline passed before the request's forward pass: nobody would read the answer."""


class Waiting(NamedTuple):
    """One queued request: item ids, ``k``, the caller's deadline (unix seconds, or None), and
    the future its answer goes to."""

    history: list
    k: int
    deadline: float
    future: asyncio.Future


def _size_buckets(max_batch):
    """Histogram buckets for batch sizes: powers of two up to ``max_batch``, and ``max_batch``."""
    return sorted({2 ** power for power in range(max_batch.bit_length())} | {max_batch})


class ServiceMetrics:
    """The service's Prometheus metrics, in a registry of its own: several services in one
    process (the tests) would otherwise register the same names twice in the global one."""

    def __init__(self, max_batch):
        self.registry = CollectorRegistry()
        self.requests = Counter("lsc_candidate_requests", "POST /candidates requests answered, by HTTP status",
                                ["status"], registry=self.registry)
        self.latency = Histogram("lsc_candidate_request_seconds", "Seconds from a request's arrival to its answer",
                                 registry=self.registry)
        self.batch_size = Histogram("lsc_batch_size", "Requests answered by one forward pass",
                                    buckets=_size_buckets(max_batch), registry=self.registry)
        self.queue_depth = Gauge("lsc_queue_depth", "Requests waiting for a forward pass", registry=self.registry)
        self.forward_seconds = Histogram("lsc_forward_pass_seconds", "Seconds of one forward pass (a micro-batch)",
                                         registry=self.registry)

    def answered(self, status, seconds):
        """Count one answered request (any status) and its latency."""
        self.requests.labels(status=str(status)).inc()
        self.latency.observe(seconds)

    def exposition(self):
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)


class MicroBatcher:
    """Answers concurrent histories with one ``cloud.candidates`` call per micro-batch.

    A batch takes every request waiting when the worker is free (they queued while the previous
    batch ran: no wait at all when the service is idle), plus those arriving within
    ``window_s`` seconds (0: none), up to ``max_batch``; it is right-padded and run on one
    worker thread (the model is never run twice at once), and each request gets its own row.
    At most ``max_queue`` requests wait: one more raises :class:`Overloaded` at once; so does a
    request whose :meth:`expected_latency` exceeds ``max_latency_s`` (when > 0): a full batch's
    pass costs many single passes, so a queue short enough for latency would be too short for
    throughput, and the bound adapts the batches instead. A request whose deadline has passed
    raises :class:`DeadlineExpired` instead of taking a row.
    """

    def __init__(self, cloud, window_s=0.0, max_batch=64, max_queue=64, metrics=None, max_latency_s=0.0):
        self.cloud, self.window_s, self.max_batch, self.max_queue = cloud, window_s, max_batch, max_queue
        self.max_latency_s = max_latency_s
        self.metrics = metrics or ServiceMetrics(max_batch)
        self.metrics.queue_depth.set_function(self.depth)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cloud-batch")
        self.queue, self.task, self.batches, self.answered = None, None, 0, 0
        self.expired, self.recent_pass_s, self.passing = 0, None, False

    async def start(self):
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.task = asyncio.create_task(self._loop())

    def depth(self):
        """Requests waiting for a forward pass (not those of the batch being answered)."""
        return self.queue.qsize() if self.queue is not None else 0

    def retry_after(self):
        """Whole seconds a refused request should wait: the passes that drain a full queue (and
        the one running) at the recent pass time; at least 1 (Retry-After counts whole seconds)."""
        passes = 1 + math.ceil(self.depth() / self.max_batch)
        return max(1, math.ceil(passes * (self.recent_pass_s or 0.0)))

    def expected_latency(self):
        """Seconds a request admitted now would wait for its answer, at the recent pass time: the
        pass running, the passes for the requests queued ahead, and its own (0 before any pass)."""
        passes = int(self.passing) + math.ceil((self.depth() + 1) / self.max_batch)
        return passes * (self.recent_pass_s or 0.0)

    def _cannot_answer_in_time(self):
        """Only a busy service refuses by its estimate: an idle one always takes the request, so
        its passes keep the recent pass time current (else one slow pass could refuse for ever)."""
        busy = self.passing or self.depth() > 0
        return busy and self.max_latency_s > 0 and self.expected_latency() > self.max_latency_s

    async def stop(self):
        if self.task is not None:
            self.task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)

    def admit(self):
        """Raise :class:`Overloaded` when a request arriving now would be refused: the queue is
        full, or it could not be answered within the latency bound. Called before a request's
        body is read (so shedding costs no parsing) and again when it is queued."""
        if self.queue.full() or self._cannot_answer_in_time():  # a full queue is not the only sign
            raise Overloaded(self.retry_after())

    async def submit(self, history_ids, k, deadline=None):
        """The answer for one request; :class:`Overloaded` at once when the queue is full,
        :class:`DeadlineExpired` when ``deadline`` (unix seconds) passes before its forward pass."""
        if _expired(deadline):
            self.expired += 1
            raise DeadlineExpired()
        self.admit()
        future = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Waiting(history_ids, k, deadline, future))  # admit() saw room; nothing awaited since
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

    def _still_wanted(self, batch):
        """The batch less the requests nobody will read: a caller that is gone (its future is
        cancelled), or whose deadline passed while it waited (answered DeadlineExpired). They
        take no row, and a batch of them takes no forward pass."""
        wanted = []
        for waiting in batch:
            if waiting.future.done():
                continue
            if _expired(waiting.deadline):
                self.expired += 1
                waiting.future.set_exception(DeadlineExpired())
                continue
            wanted.append(waiting)
        return wanted

    @torch.inference_mode()
    def _answer(self, batch):
        """One forward pass per distinct ``k`` in the batch (a device asks for its C, so usually
        one): ``[(item ids, scores, model id, history length) per request]``."""
        answers = [None] * len(batch)
        for k in sorted({waiting.k for waiting in batch}):
            rows = [row for row, waiting in enumerate(batch) if waiting.k == k]
            histories = [batch[row].history for row in rows]
            seq = torch.zeros(len(rows), max(map(len, histories)), dtype=torch.long)
            for index, history in enumerate(histories):
                seq[index, : len(history)] = torch.tensor(history, dtype=torch.long)
            lists = self.cloud.candidates(seq, torch.tensor([len(history) for history in histories]), k)
            for index, row in enumerate(rows):
                answers[row] = (lists.item_ids[index].tolist(), lists.scores[index].tolist(), lists.model_id,
                                int(lists.history_len[index]))
        return answers

    async def _forward(self, batch):
        """``_answer`` on the worker thread, timed: the time feeds the histogram and Retry-After."""
        started, self.passing = time.perf_counter(), True
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self._answer, batch)
        finally:
            seconds, self.passing = time.perf_counter() - started, False
            self.metrics.forward_seconds.observe(seconds)
            recent = seconds if self.recent_pass_s is None else self.recent_pass_s
            self.recent_pass_s = recent + _RECENT_PASS_WEIGHT * (seconds - recent)

    async def _loop(self):
        while True:
            batch = self._still_wanted(await self._collect())
            if not batch:
                continue
            self.batches, self.answered = self.batches + 1, self.answered + len(batch)
            self.metrics.batch_size.observe(len(batch))
            try:
                lists = await self._forward(batch)
            except Exception as err:  # the batch fails, the service does not
                logging.getLogger().exception("candidate batch failed")
                for waiting in batch:
                    if not waiting.future.done():
                        waiting.future.set_exception(err)
                continue
            for waiting, answer in zip(batch, lists):
                if not waiting.future.done():
                    waiting.future.set_result(answer)


def _expired(deadline):
    """Whether a request's deadline (unix seconds, None: none) has passed."""
    return deadline is not None and deadline <= time.time()


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


def _deadline(request):
    """The caller's deadline from the ``X-Request-Deadline`` header (unix seconds), None without
    one; anything but a finite number is a bad request (400)."""
    given = request.headers.get(DEADLINE_HEADER)
    if given is None:
        return None
    try:
        deadline = float(given)
    except ValueError:
        deadline = math.nan
    if not math.isfinite(deadline):
        raise BadRequest(400, f"{DEADLINE_HEADER} must be a unix time in seconds (a number), got {_short(given)}")
    return deadline


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
               max_batch=64, max_queue=64, max_latency_s=0.0):
    """The FastAPI app serving ``cloud`` (an :class:`~recbole_lsc.cloud.source.InProcessCloud`).

    ``item_tokens[id]`` is the dataset's token of item ``id``; ``token`` the bearer token
    requests must carry (None: no authentication); ``max_queue`` the most requests that wait
    for a forward pass (503 beyond); ``max_latency_s`` the longest expected wait for an answer
    a request is admitted with (503 beyond; 0: no bound).
    """
    metrics = ServiceMetrics(max_batch)
    batcher = MicroBatcher(cloud, batch_window_ms / 1000.0, max_batch, max_queue, metrics, max_latency_s)
    checks = CandidateRequests(item_tokens, cloud.max_history, cloud.llm.mask_history, limits)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="recbole-lsc cloud", lifespan=lifespan)
    app.state.batcher, app.state.metrics = batcher, metrics

    def refuse(status, message, headers=None):
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def overloaded(full):
        return refuse(QUEUE_FULL_STATUS, f"the service is overloaded ({batcher.depth()} requests wait, at most "
                                         f"{max_queue}); retry after {full.retry_after} s",
                      {"Retry-After": str(full.retry_after)})

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_id": cloud.model_id, "model_version": model_version,
                "items": len(item_tokens) - 1, "max_history": cloud.max_history, "limits": limits.__dict__,
                "auth": token is not None, "answered": batcher.answered, "forward_passes": batcher.batches,
                "queued": batcher.depth(), "max_queue": max_queue, "max_latency_ms": max_latency_s * 1000.0,
                "expired": batcher.expired}

    @app.get("/metrics")
    async def prometheus_metrics():
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.post("/candidates")
    async def candidates(request: Request):
        started = time.perf_counter()
        response = await answer(request)
        metrics.answered(response.status_code, time.perf_counter() - started)
        return response

    async def answer(request):
        """The response to one ``POST /candidates``, whatever it is (every path ends here, so
        every answer is counted)."""
        if not _authorised(request, token):
            return refuse(401, "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                          {"WWW-Authenticate": "Bearer"})
        try:
            batcher.admit()  # shed before the body is read and parsed: a refusal costs next to nothing
            history, k = checks.parse(await _read_body(request, limits.max_body_bytes))
            deadline = _deadline(request)
        except Overloaded as full:
            return overloaded(full)
        except BadRequest as err:
            return refuse(err.status, err.message)
        except Exception as err:  # noqa: BLE001 - whatever a request sends, the service answers and stays up
            logging.getLogger().exception("unexpected error while reading a request")
            return refuse(400, f"the request could not be read ({err.__class__.__name__}); send "
                               '{"history": [item tokens], "k": N}')
        try:
            ids, scores, model_id, history_len = await batcher.submit(history, k, deadline)
        except Overloaded as full:
            return overloaded(full)
        except DeadlineExpired:
            return refuse(DEADLINE_PASSED_STATUS, f"the request's {DEADLINE_HEADER} passed before the cloud reached "
                                                  "it; it was dropped unanswered")
        except Exception as err:  # noqa: BLE001 - answered, logged by the batcher
            return refuse(500, f"the cloud failed on this batch ({err.__class__.__name__}); try again")
        # a ready JSONResponse skips FastAPI's per-element encoder: the answer is plain JSON already
        return JSONResponse({"items": [item_tokens[item] for item in ids], "scores": scores, "model_id": model_id,
                             "model_version": model_version, "history_len": history_len})

    return app
