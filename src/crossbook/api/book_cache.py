"""Order-book levels rendered to JSON once per change and shared by every reader.

A book read of 1,000 levels per side renders 2,000 price and quantity strings,
and a WebSocket snapshot of a 3,000-level book 6,000: about 5 and 15 ms. Under
order entry a book's sequence moves at every change, so rendering "once per
sequence" alone still re-rendered the whole book for nearly every read
(`crossbook loadtest --flood reads`: a third of the server's time). So each
level's JSON is kept by price and reused while its quantity and count are the
same; a change re-renders only the levels it touched, and a read joins the
kept fragments. On top of that, each market keeps the last rendered sides per
depth until its sequence moves, so repeated reads of an unchanged book are a
lookup.

Invariants: a level's kept JSON is reused only for the exact (price, quantity,
count) it was rendered from, and a depth's sides only for the exact market
sequence, so nothing older than the projection it was asked of is ever served;
memory is bounded: per side at most twice the widest render's levels, per
market at most `MAX_DEPTHS_PER_MARKET` depths.
Known limits: one event loop (not thread-safe), like the projection it reads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import orjson

from crossbook.api.envelope import iso_ms
from crossbook.api.views import level_json, spread_json
from crossbook.domain import MarketSpec
from crossbook.engine.read_model.books import BookSnapshot, Level

MAX_DEPTHS_PER_MARKET = 8

_Sides = tuple[orjson.Fragment, orjson.Fragment]


class _SideLevels:
    """One side's levels as JSON, by price: (lots, count, the level's JSON)."""

    __slots__ = ("_kept", "_widest")

    def __init__(self) -> None:
        self._kept: dict[int, tuple[int, int, bytes]] = {}
        self._widest = 0  # the most levels one render asked for

    def render(self, spec: MarketSpec, levels: Sequence[Level]) -> bytes:
        """`views.levels_json` of `levels`, as JSON."""
        kept = self._kept
        parts: list[bytes] = []
        for level in levels:
            entry = kept.get(level.price_ticks)
            if entry is None or entry[0] != level.quantity_lots or entry[1] != level.order_count:
                rendered = orjson.dumps(level_json(spec, level))
                entry = (level.quantity_lots, level.order_count, rendered)
                kept[level.price_ticks] = entry
            parts.append(entry[2])
        self._widest = max(self._widest, len(levels))
        if len(kept) > 2 * self._widest:  # prices that left the book: keep only these
            self._kept = {level.price_ticks: kept[level.price_ticks] for level in levels}
        return b"[" + b",".join(parts) + b"]"


class _MarketBooks:
    __slots__ = ("asks", "bids", "depths", "market_seq")

    def __init__(self) -> None:
        self.bids = _SideLevels()
        self.asks = _SideLevels()
        self.market_seq = -1
        self.depths: OrderedDict[int, _Sides] = OrderedDict()


class BookCache:
    def __init__(self) -> None:
        self._markets: dict[str, _MarketBooks] = {}

    def sides(self, spec: MarketSpec, book: BookSnapshot) -> _Sides:
        """The snapshot's bids and asks as embeddable JSON (`orjson.Fragment`)."""
        market = self._markets.get(book.symbol)
        if market is None:
            market = self._markets[book.symbol] = _MarketBooks()
        if market.market_seq != book.market_seq:
            market.market_seq = book.market_seq
            market.depths.clear()
        depth = max(len(book.bids), len(book.asks))
        rendered = market.depths.get(depth)
        if rendered is None:
            if len(market.depths) >= MAX_DEPTHS_PER_MARKET:
                market.depths.popitem(last=False)
            rendered = market.depths[depth] = (
                orjson.Fragment(market.bids.render(spec, book.bids)),
                orjson.Fragment(market.asks.render(spec, book.asks)),
            )
        return rendered

    def book_json(self, spec: MarketSpec, book: BookSnapshot, now_ms: int) -> dict[str, Any]:
        """The REST book (`OrderBookOut`)."""
        bids, asks = self.sides(spec, book)
        return {
            "symbol": book.symbol,
            "timestamp": iso_ms(now_ms),
            "sequence": book.market_seq,
            "bids": bids,
            "asks": asks,
            "spread": spread_json(spec, book),
        }
