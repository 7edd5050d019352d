"""The order book of one market: price levels with FIFO queues.

Each side keeps a dict from a sort key to its `PriceLevel` and a sorted list of
the keys, ascending, with the best level at the END of the list (bids key on
price, asks on -price). The common operations are then O(1): best level
(`keys[-1]`), emptying the best level (`keys.pop()`), appending to a level and
cancelling by reference (each level is an intrusive doubly linked list of
`Order`s). Inserting or removing a level away from the top costs a bisect plus a
list memmove, which measures faster than heaps or balanced trees at real depths.

Invariants (checked by `invariants.check_book`):
- a level exists iff it holds at least one order; its `total_lots` and
  `order_count` equal the sum and count of its orders' remaining quantity;
- orders within a level are in ascending `priority` (time priority);
- `keys` is sorted and equals the dict's keys; the book is never crossed
  between commands (best bid < best ask).
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator
from typing import Final

from crossbook.domain.orders import Order, Side

MAX_DEPTH_LEVELS: Final = 5_000
_BUY: Final = Side.BUY  # bound once: see the note on enum lookups in `exchange`


class PriceLevel:
    __slots__ = ("head", "order_count", "price_ticks", "tail", "total_lots")

    def __init__(self, price_ticks: int) -> None:
        self.price_ticks = price_ticks
        self.head: Order | None = None
        self.tail: Order | None = None
        self.order_count = 0
        self.total_lots = 0

    def append(self, order: Order) -> None:
        order.level = self
        order.prev = self.tail
        order.next = None
        if self.tail is None:
            self.head = order
        else:
            self.tail.next = order
        self.tail = order
        self.order_count += 1
        self.total_lots += order.quantity_lots - order.filled_lots

    def unlink(self, order: Order) -> None:
        """Remove `order`, whose remaining quantity must already be taken off `total_lots`."""
        prev, nxt = order.prev, order.next
        if prev is None:
            self.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.prev = prev
        order.prev = order.next = None
        order.level = None
        self.order_count -= 1

    def orders(self) -> Iterator[Order]:
        order = self.head
        while order is not None:
            yield order
            order = order.next


class BookSide:
    __slots__ = ("keys", "levels", "side", "sign")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.sign = 1 if side is Side.BUY else -1
        self.levels: dict[int, PriceLevel] = {}
        self.keys: list[int] = []

    def best(self) -> PriceLevel | None:
        return self.levels[self.keys[-1]] if self.keys else None

    def crosses(self, limit_ticks: int) -> bool:
        """Whether a taker limited at `limit_ticks` would trade with this side's best level."""
        keys = self.keys
        return bool(keys) and keys[-1] >= self.sign * limit_ticks

    def add(self, order: Order) -> None:
        key = self.sign * order.price_ticks
        level = self.levels.get(key)
        if level is None:
            level = self.levels[key] = PriceLevel(order.price_ticks)
            if not self.keys or key > self.keys[-1]:
                self.keys.append(key)
            else:
                insort(self.keys, key)
        level.append(order)

    def remove(self, order: Order) -> None:
        """Take a resting order out of the book (cancel, expiry, amend)."""
        level = order.level
        assert level is not None, order
        level.total_lots -= order.quantity_lots - order.filled_lots
        level.unlink(order)
        if level.order_count == 0:
            self.drop_level(level)

    def drop_level(self, level: PriceLevel) -> None:
        assert level.order_count == 0 and level.total_lots == 0, level.price_ticks
        key = self.sign * level.price_ticks
        del self.levels[key]
        if self.keys[-1] == key:
            self.keys.pop()
        else:
            del self.keys[bisect_left(self.keys, key)]

    def levels_best_first(self) -> Iterator[PriceLevel]:
        levels = self.levels
        for key in reversed(self.keys):
            yield levels[key]

    def depth(self, max_levels: int) -> list[tuple[int, int, int]]:
        """(price_ticks, total_lots, order_count) of the best `max_levels` levels."""
        assert 0 < max_levels <= MAX_DEPTH_LEVELS, max_levels
        out: list[tuple[int, int, int]] = []
        for level in self.levels_best_first():
            if len(out) == max_levels:
                break
            out.append((level.price_ticks, level.total_lots, level.order_count))
        return out


class OrderBook:
    __slots__ = ("asks", "bids", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = BookSide(Side.BUY)
        self.asks = BookSide(Side.SELL)

    def side(self, side: Side) -> BookSide:
        return self.bids if side is _BUY else self.asks

    def best_bid_ticks(self) -> int | None:
        level = self.bids.best()
        return None if level is None else level.price_ticks

    def best_ask_ticks(self) -> int | None:
        level = self.asks.best()
        return None if level is None else level.price_ticks

    def spread_ticks(self) -> int | None:
        bid, ask = self.best_bid_ticks(), self.best_ask_ticks()
        return None if bid is None or ask is None else ask - bid

    def l3(self) -> dict[Side, list[tuple[int, list[tuple[int, int]]]]]:
        """Every level best-first with its (order_id, remaining_lots) in time priority."""
        return {
            book_side.side: [
                (level.price_ticks, [(o.order_id, o.remaining_lots) for o in level.orders()])
                for level in book_side.levels_best_first()
            ]
            for book_side in (self.bids, self.asks)
        }
