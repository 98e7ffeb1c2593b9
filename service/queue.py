"""The job queue: Redis Streams, or an in-process twin behind the same interface.

A job is only an id (`<edit id>` or `rollback:<edit id>`; the work is described
in the store); the queue's job is the order in which the one writer applies them. Both queues keep an entry
until it is acknowledged, so a worker that dies leaves its job pending:

* `RedisStreamQueue`: XADD to one stream, XREADGROUP through one consumer
  group. On `open` the writer takes over every pending entry (XAUTOCLAIM with
  min idle 0: there is one writer per store) and reads its own pending list
  (id 0) before new entries (id >). Ack is XACK + XDEL in one MULTI, so the
  stream holds exactly the backlog. Connection errors become `QueueUnavailable`
  and are retried by the worker; a stream that vanished (Redis restarted
  empty) is recreated and reported the same way, so the worker re-enqueues
  what the store knows is unfinished.
* `MemoryQueue`: the embedded default (no REDIS_URL). Memory only; it is
  durable through the store, because the worker re-enqueues every unfinished
  job from the store on start. Call it from the event loop only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Protocol

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .keys import FIELD_JOB_ID, RedisKeys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A queue entry carries only the job's id: what to do is in the store's job row."""

    id: str


@dataclass(frozen=True)
class Delivery:
    message_id: str
    job: Job


class QueueUnavailable(Exception):
    """The queue cannot be reached now, or lost its data; try again later."""


class JobQueue(Protocol):
    async def open(self) -> None:
        """Make the queue ready and take over pending entries of earlier writers."""

    async def enqueue(self, job: Job) -> str:
        """Append a job; returns its message id."""

    async def read(self, block_ms: int) -> Delivery | None:
        """The next job (own pending ones first), or None after `block_ms`."""

    async def ack(self, delivery: Delivery) -> None:
        """The job is done: remove it for good."""

    async def backlog(self) -> list[Job]:
        """Every job enqueued and not acknowledged, in queue order."""

    async def depth(self) -> int: ...

    async def ping(self) -> bool: ...

    async def close(self) -> None: ...


class RedisStreamQueue:
    def __init__(self, url: str, keys: RedisKeys, *, consumer: str | None = None, block_ms: int = 500):
        self.keys = keys
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        # No hidden retries in the client: the worker retries, and counts them.
        self.redis = Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=1.0,
            socket_timeout=block_ms / 1000 + 5.0,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._pending_first = True

    async def _call(self, coro):
        """Await a Redis call, turning connection trouble into QueueUnavailable."""
        try:
            return await coro
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
            raise QueueUnavailable(f"redis: {e}") from e
        except redis_errors.ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            lost = e
        await self._call(self._ensure_group())
        raise QueueUnavailable("the job stream was gone (Redis restarted empty?); recreated it") from lost

    async def _ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.keys.jobs_stream, self.keys.workers_group, id="0", mkstream=True)
        except redis_errors.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._pending_first = True

    async def open(self) -> None:
        await self._call(self._ensure_group())
        start = "0-0"
        while True:
            reply = await self._call(
                self.redis.xautoclaim(self.keys.jobs_stream, self.keys.workers_group, self.consumer, 0, start, count=100)
            )
            start = reply[0]
            if start == "0-0":
                break
        self._pending_first = True

    async def enqueue(self, job: Job) -> str:
        return await self._call(self.redis.xadd(self.keys.jobs_stream, {FIELD_JOB_ID: job.id}))

    async def read(self, block_ms: int) -> Delivery | None:
        if self._pending_first:
            found = await self._read("0", None)
            if found is not None:
                return found
            self._pending_first = False
        return await self._read(">", block_ms)

    async def _read(self, start: str, block_ms: int | None) -> Delivery | None:
        reply = await self._call(
            self.redis.xreadgroup(self.keys.workers_group, self.consumer, {self.keys.jobs_stream: start}, count=1, block=block_ms or None)
        )
        for _stream, entries in reply or []:
            for message_id, fields in entries:
                if not fields:  # deleted while pending: nothing to do but forget it
                    await self._call(self.redis.xack(self.keys.jobs_stream, self.keys.workers_group, message_id))
                    return await self._read(start, block_ms) if start == "0" else None
                return Delivery(message_id, _job(fields))
        return None

    async def ack(self, delivery: Delivery) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.xack(self.keys.jobs_stream, self.keys.workers_group, delivery.message_id)
        pipe.xdel(self.keys.jobs_stream, delivery.message_id)
        await self._call(pipe.execute())

    async def backlog(self) -> list[Job]:
        entries = await self._call(self.redis.xrange(self.keys.jobs_stream))
        return [_job(fields) for _id, fields in entries if fields]

    async def depth(self) -> int:
        return await self._call(self.redis.xlen(self.keys.jobs_stream))

    async def ping(self) -> bool:
        try:
            return bool(await self._call(self.redis.ping()))
        except QueueUnavailable:
            return False

    async def close(self) -> None:
        await self.redis.aclose()


def _job(fields: dict) -> Job:
    return Job(fields[FIELD_JOB_ID])


class MemoryQueue:
    """The embedded queue: insertion-ordered entries, each delivered at most once
    until `open` (a restart) hands the unacknowledged ones out again."""

    def __init__(self) -> None:
        self._entries: dict[str, Job] = {}
        self._delivered: set[str] = set()
        self._next = 0
        self._arrived = asyncio.Event()

    async def open(self) -> None:
        self._delivered.clear()

    async def enqueue(self, job: Job) -> str:
        self._next += 1
        message_id = f"{self._next}-0"
        self._entries[message_id] = job
        self._arrived.set()
        return message_id

    async def read(self, block_ms: int) -> Delivery | None:
        for message_id, job in self._entries.items():
            if message_id not in self._delivered:
                self._delivered.add(message_id)
                return Delivery(message_id, job)
        self._arrived.clear()
        try:
            await asyncio.wait_for(self._arrived.wait(), block_ms / 1000)
        except asyncio.TimeoutError:
            return None
        return await self.read(0)

    async def ack(self, delivery: Delivery) -> None:
        self._entries.pop(delivery.message_id, None)
        self._delivered.discard(delivery.message_id)

    async def backlog(self) -> list[Job]:
        return list(self._entries.values())

    async def depth(self) -> int:
        return len(self._entries)

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._entries.clear()


def make_queue(redis_url: str | None, keys: RedisKeys) -> JobQueue:
    """Redis Streams when a URL is given, else the embedded queue."""
    return RedisStreamQueue(redis_url, keys) if redis_url else MemoryQueue()
