"""Per-key token buckets: `rate` requests a second on average, `burst` at once.

In memory, in the one service process (the service runs one process by
design). A bucket starts full; `take` either spends a token or says how many
whole seconds to wait, which becomes the 429's `Retry-After`.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock=time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()  # sync routes run in threads

    def take(self, key: str) -> int | None:
        """None when `key` may go ahead (one token spent); else seconds to wait (>= 1)."""
        if self.rate <= 0:
            return None
        now = self.clock()
        with self._lock:
            b = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
            b.tokens = min(float(self.burst), b.tokens + (now - b.at) * self.rate)
            b.at = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return None
            return max(1, math.ceil((1.0 - b.tokens) / self.rate))
