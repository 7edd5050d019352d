"""Order books of the read model: aggregated price levels, their snapshots and diffs.

`BookSide` holds one side of one market as aggregated levels (price -> lots and
order count), kept sorted best first, and remembers what each level was before
the first change since the last `take_changes`, so a batch's diff is exactly
the levels it changed. `Level`, `BookSnapshot` and `BookDiff` are the immutable
values the read model hands out.

Invariants (asserted; a broken one is a bug in the caller's bookkeeping):
- a level exists iff at least one order rests at its price: its count is the
  number of those orders and its lots the sum of their remaining quantities,
  lots > 0 whenever count > 0; prices are > 0;
- `keys` holds every level's price once, sorted best first (bids descending,
  asks ascending);
- `take_changes` returns each level whose (lots, count) differs from before its
  first change since the previous call, once, best first, with its new value
  (lots and count 0: removed); a level changed and changed back is not in it.

Known limits: `top(depth)` is O(depth) on a miss (a cache of the widest top
read so far is kept until the next change); `remove` is O(levels) for the key
list's deletion (a list, not a tree: books rarely hold more than a few
thousand levels); not thread-safe.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass

from crossbook.domain import Side


@dataclass(frozen=True, slots=True)
class Level:
    """One aggregated price level."""

    price_ticks: int
    quantity_lots: int  # 0 in a `BookDiff` means "level removed"
    order_count: int


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    symbol: str
    market_seq: int  # the market's last committed market_seq the snapshot includes
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first


@dataclass(frozen=True, slots=True)
class BookDiff:
    symbol: str
    first_market_seq: int  # first market_seq of this market in the batch
    last_market_seq: int  # last one; next diff's first == this last + 1 (gap-free)
    bids: tuple[Level, ...]  # changed bid levels, new absolute values (quantity 0 = removed)
    asks: tuple[Level, ...]


class BookSide:
    """Aggregated levels of one side: price -> [lots, count], keys sorted best first.

    `_before` remembers, for each level touched since the last `take_changes`, its
    (lots, count) before the first touch; `_top` caches the best levels as `Level`s.
    """

    __slots__ = ("_before", "_top", "_top_complete", "keys", "levels", "sign")

    def __init__(self, side: Side) -> None:
        self.sign = -1 if side is Side.BUY else 1  # keys ascending = best first
        self.levels: dict[int, list[int]] = {}
        self.keys: list[int] = []
        self._before: dict[int, tuple[int, int]] = {}
        self._top: tuple[Level, ...] = ()
        self._top_complete = True

    def _touch(self, price_ticks: int) -> list[int] | None:
        level = self.levels.get(price_ticks)
        if price_ticks not in self._before:
            self._before[price_ticks] = (level[0], level[1]) if level is not None else (0, 0)
        self._top = ()
        self._top_complete = False
        return level

    def add(self, price_ticks: int, lots: int) -> None:
        """An order with `lots` remaining rests at `price_ticks`."""
        assert price_ticks > 0 and lots > 0, (price_ticks, lots)
        level = self._touch(price_ticks)
        if level is None:
            self.levels[price_ticks] = [lots, 1]
            insort(self.keys, self.sign * price_ticks)
        else:
            level[0] += lots
            level[1] += 1

    def adjust(self, price_ticks: int, delta_lots: int) -> None:
        """An order resting at `price_ticks` changed its remaining quantity by `delta_lots`."""
        level = self._touch(price_ticks)
        assert level is not None and level[0] + delta_lots >= 0, (price_ticks, level, delta_lots)
        level[0] += delta_lots

    def remove(self, price_ticks: int, lots: int) -> None:
        """An order with `lots` remaining left the level at `price_ticks`."""
        level = self._touch(price_ticks)
        assert level is not None and level[0] >= lots, (price_ticks, level, lots)
        level[0] -= lots
        level[1] -= 1
        if level[1] == 0:
            assert level[0] == 0, (price_ticks, level)
            del self.levels[price_ticks]
            keys = self.keys
            del keys[bisect_left(keys, self.sign * price_ticks)]

    def top(self, depth: int) -> tuple[Level, ...]:
        """The best `depth` levels (fewer if the side has fewer)."""
        if self._top_complete or depth <= len(self._top):
            return self._top[:depth]
        sign, levels = self.sign, self.levels
        top = tuple(
            Level(price, levels[price][0], levels[price][1])
            for price in (sign * key for key in self.keys[:depth])
        )
        self._top = top
        self._top_complete = len(top) == len(self.keys)
        return top

    def best(self) -> Level | None:
        if not self.keys:
            return None
        price = self.sign * self.keys[0]
        lots, count = self.levels[price]
        return Level(price, lots, count)

    def take_changes(self) -> tuple[Level, ...]:
        """Levels changed since the last call, best first, with their new values."""
        changed: list[Level] = []
        for price, before in self._before.items():
            level = self.levels.get(price)
            now = (level[0], level[1]) if level is not None else (0, 0)
            assert now[1] == 0 or now[0] > 0, ("level without quantity", price, now)
            if now != before:
                changed.append(Level(price, now[0], now[1]))
        self._before.clear()
        changed.sort(key=lambda level: self.sign * level.price_ticks)
        return tuple(changed)

    def aggregate(self) -> list[tuple[int, int, int]]:
        """(price, lots, count) of every level, best first (for checks)."""
        return [
            (level.price_ticks, level.quantity_lots, level.order_count)
            for level in self.top(len(self.keys))
        ]
