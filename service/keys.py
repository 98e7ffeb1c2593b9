"""Every Redis key and stream name the service uses, in one place (as arq's constants.py).

Redis holds only the job stream; the store directory holds everything that must
survive. `prefix` is `<Settings.queue_name>:<store id>`, so any number of
stores (and test runs) can share one Redis without touching each other's jobs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "instructedit"

    @property
    def jobs_stream(self) -> str:
        """The stream of jobs (edits and rollbacks), in the one order they are applied."""
        return f"{self.prefix}:jobs"

    @property
    def workers_group(self) -> str:
        """The consumer group the writer reads through (pending list = delivered, not acked)."""
        return f"{self.prefix}:writers"


# The one field of a stream entry: the job's id (the store holds the rest).
FIELD_JOB_ID = "job_id"
