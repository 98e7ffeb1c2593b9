"""One contract for both queues (service/queue.py): Redis Streams on a real
redis-server, and the embedded twin."""

import asyncio
import uuid

import pytest
from redis import Redis

from service.keys import RedisKeys
from service.queue import Job, MemoryQueue, QueueUnavailable, RedisStreamQueue


@pytest.fixture(params=["memory", "redis"])
def make_queue(request):
    """A factory: every call is a new queue object over the same queue (for redis,
    the same stream; for memory, the same object, as within one process)."""
    if request.param == "memory":
        queue = MemoryQueue()
        return lambda: queue
    keys = RedisKeys(f"qtest-{uuid.uuid4().hex[:8]}")
    url = request.getfixturevalue("redis_server").url
    return lambda: RedisStreamQueue(url, keys)


def jobs(n):
    return [Job(f"e{i}") for i in range(n)]


def test_order_ack_and_backlog(make_queue):
    async def scenario():
        q = make_queue()
        await q.open()
        for job in jobs(3):
            await q.enqueue(job)
        assert await q.depth() == 3 and await q.backlog() == jobs(3)
        seen = []
        while (d := await q.read(10)) is not None:
            seen.append(d.job)
            await q.ack(d)
        assert seen == jobs(3) and await q.depth() == 0 and await q.backlog() == []
        assert await q.ping()

    asyncio.run(scenario())


def test_unacked_jobs_come_back_after_a_restart(make_queue):
    async def scenario():
        q = make_queue()
        await q.open()
        for job in jobs(2):
            await q.enqueue(job)
        first = await q.read(10)
        assert first.job == jobs(1)[0]
        # The writer dies here, before the ack; a new one opens the queue.
        q2 = make_queue()
        await q2.open()
        again = await q2.read(10)
        assert again.job == first.job
        await q2.ack(again)
        nxt = await q2.read(10)
        assert nxt.job == jobs(2)[1]
        await q2.ack(nxt)
        assert await q2.read(10) is None

    asyncio.run(scenario())


def test_redis_that_lost_the_stream_is_reported_and_recreated(redis_server):
    async def scenario():
        keys = RedisKeys(f"qtest-{uuid.uuid4().hex[:8]}")
        q = RedisStreamQueue(redis_server.url, keys)
        await q.open()
        Redis.from_url(redis_server.url).delete(keys.jobs_stream)
        with pytest.raises(QueueUnavailable, match="gone"):
            await q.read(10)
        await q.enqueue(jobs(1)[0])
        assert (await q.read(10)).job == jobs(1)[0]
        await q.close()

    asyncio.run(scenario())


def test_redis_down_is_unavailable_not_a_crash():
    async def scenario():
        q = RedisStreamQueue("redis://127.0.0.1:1/0", RedisKeys("nobody"))
        with pytest.raises(QueueUnavailable):
            await q.enqueue(jobs(1)[0])
        assert await q.ping() is False
        await q.close()

    asyncio.run(scenario())
