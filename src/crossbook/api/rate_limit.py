"""Token buckets: per user for order entry (place, cancel, amend), per client address
for reads (`middleware`), each limiter with buckets of its own.

Each key has a bucket of `burst` tokens refilled at `rate_per_s`; a request
takes one token or is refused with the seconds until one is available. Time
comes from a monotonic clock passed in (tests use a fake).

Bounded: at most `max_users` buckets are kept; when full, the least recently
used bucket is dropped (it would have refilled anyway if idle long enough; a
dropped busy key starts again with a full bucket, a known and small leak).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

DEFAULT_MAX_USERS = 100_000


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        max_users: int = DEFAULT_MAX_USERS,
        clock_s: Callable[[], float] = time.monotonic,
    ) -> None:
        assert rate_per_s > 0 and burst > 0 and max_users > 0, (rate_per_s, burst, max_users)
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._max_users = max_users
        self._clock_s = clock_s
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()  # tokens, at

    def take(self, user_id: Hashable) -> float:
        """Take a token: 0.0 if allowed, else the seconds to wait before retrying."""
        now = self._clock_s()
        tokens, at = self._buckets.pop(user_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        wait_s = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait_s = (1.0 - tokens) / self.rate_per_s
        self._buckets[user_id] = (tokens, now)
        if len(self._buckets) > self._max_users:
            self._buckets.popitem(last=False)
        return wait_s


def retry_after_header(wait_s: float) -> str:
    """Retry-After in whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
