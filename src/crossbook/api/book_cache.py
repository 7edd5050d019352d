"""The REST order book, rendered once per market sequence and depth and shared.

A book read of 1,000 levels per side renders 2,000 price and quantity strings;
a client looping that read made every other request wait behind it. The levels
of a market change only with its sequence, so `BookCache` keeps each depth's
rendered sides (`orjson.Fragment`, embedded as they are in the answer) until
the market's sequence moves; a read then costs the envelope around them.

Invariants: an entry is served only for the exact (market sequence, depth) it
was rendered from, so a read never shows a book older than the projection it
was asked of; at most `MAX_DEPTHS_PER_MARKET` depths are kept per market (the
oldest is dropped first), so memory is bounded by markets × depths × levels.
Known limits: one event loop (not thread-safe), like the projection it reads.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from crossbook.api.envelope import iso_ms
from crossbook.api.views import levels_json, spread_json
from crossbook.domain import MarketSpec
from crossbook.engine.market_data import BookSnapshot

MAX_DEPTHS_PER_MARKET = 8

_Rendered = tuple[orjson.Fragment, orjson.Fragment, str | None]  # bids, asks, spread


class BookCache:
    def __init__(self) -> None:
        # symbol -> (market_seq, depth -> rendered sides)
        self._markets: dict[str, tuple[int, OrderedDict[int, _Rendered]]] = {}

    def book_json(
        self, spec: MarketSpec, book: BookSnapshot, depth: int, now_ms: int
    ) -> dict[str, Any]:
        """The REST book (`OrderBookOut`), its levels rendered at most once per sequence."""
        bids, asks, spread = self._rendered(spec, book, depth)
        return {
            "symbol": book.symbol,
            "timestamp": iso_ms(now_ms),
            "sequence": book.market_seq,
            "bids": bids,
            "asks": asks,
            "spread": spread,
        }

    def _rendered(self, spec: MarketSpec, book: BookSnapshot, depth: int) -> _Rendered:
        entry = self._markets.get(book.symbol)
        if entry is None or entry[0] != book.market_seq:
            entry = (book.market_seq, OrderedDict())
            self._markets[book.symbol] = entry
        depths = entry[1]
        rendered = depths.get(depth)
        if rendered is None:
            if len(depths) >= MAX_DEPTHS_PER_MARKET:
                depths.popitem(last=False)
            rendered = depths[depth] = (
                orjson.Fragment(orjson.dumps(levels_json(spec, book.bids))),
                orjson.Fragment(orjson.dumps(levels_json(spec, book.asks))),
                spread_json(spec, book),
            )
        return rendered
