"""Waiting stop orders of one market and the rule that triggers them.

A buy stop triggers when the last trade price rises to or above its stop price;
a sell stop when it falls to or below. Triggering is deterministic: after a
command's trades, every stop whose condition holds at the new last price is
triggered, in placement (priority) order; trades made by triggered orders can
trigger more, which are handled after them in the same way.

Cancelled stops are deleted lazily from the heaps; the heaps are rebuilt when
dead entries outnumber live ones (bounded memory under cancel-heavy use).
"""

from __future__ import annotations

import heapq
from typing import Final

from crossbook.domain.orders import Order, Side

_COMPACT_MIN_DEAD: Final = 64


class StopBook:
    __slots__ = ("_buy_heap", "_dead", "_live", "_sell_heap")

    def __init__(self) -> None:
        self._buy_heap: list[tuple[int, int, Order]] = []  # (stop, priority, order)
        self._sell_heap: list[tuple[int, int, Order]] = []  # (-stop, priority, order)
        self._live: dict[int, Order] = {}
        self._dead = 0

    def __len__(self) -> int:
        return len(self._live)

    def add(self, order: Order) -> None:
        assert not order.triggered and order.order_id not in self._live, order
        self._live[order.order_id] = order
        if order.side is Side.BUY:
            heapq.heappush(self._buy_heap, (order.stop_price_ticks, order.priority, order))
        else:
            heapq.heappush(self._sell_heap, (-order.stop_price_ticks, order.priority, order))

    def discard(self, order: Order) -> None:
        del self._live[order.order_id]
        self._dead += 1
        if self._dead > _COMPACT_MIN_DEAD and self._dead > len(self._live):
            self._compact()

    def pop_triggered(self, last_price_ticks: int) -> list[Order]:
        """Remove and return the stops triggered at `last_price_ticks`, in priority order."""
        fired: list[Order] = []
        buy, sell, live = self._buy_heap, self._sell_heap, self._live
        while buy and buy[0][0] <= last_price_ticks:
            order = heapq.heappop(buy)[2]
            if live.pop(order.order_id, None) is not None:
                fired.append(order)
            else:
                self._dead -= 1
        while sell and -sell[0][0] >= last_price_ticks:
            order = heapq.heappop(sell)[2]
            if live.pop(order.order_id, None) is not None:
                fired.append(order)
            else:
                self._dead -= 1
        fired.sort(key=_priority)
        return fired

    def orders(self) -> list[Order]:
        return sorted(self._live.values(), key=_priority)

    def _compact(self) -> None:
        live = self._live
        self._buy_heap = [e for e in self._buy_heap if e[2].order_id in live]
        self._sell_heap = [e for e in self._sell_heap if e[2].order_id in live]
        heapq.heapify(self._buy_heap)
        heapq.heapify(self._sell_heap)
        self._dead = 0


def _priority(order: Order) -> int:
    return order.priority
