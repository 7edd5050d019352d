"""The wall clock: the one place the exchange reads the time of day.

Everything that needs the time takes a `Clock` (`engine.ports`) and is given
this one by the composition root; the domain is given the time as an input
(DESIGN rule 2). The wallet service, a separate application, keeps its own.
"""

from __future__ import annotations

import time


class SystemClock:
    __slots__ = ()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


WALL_CLOCK = SystemClock()
