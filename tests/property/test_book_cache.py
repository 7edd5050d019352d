"""`BookCache` against a fresh rendering: whatever the sequence of book changes and
depths asked for, the kept JSON equals `levels_json` of the book as it is now."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from crossbook.api.book_cache import BookCache
from crossbook.api.views import levels_json
from crossbook.domain import Asset, MarketSpec
from crossbook.engine.read_model.books import BookSnapshot, Level

SPEC = MarketSpec.create(
    Asset.create("BTC", 8),
    Asset.create("USDT", 6),
    tick_size="0.01",
    lot_size="0.0001",
    min_quantity="0.0001",
    max_quantity="1000",
)
CHANGES = st.lists(
    st.tuples(
        st.integers(1, 40),  # price ticks
        st.integers(0, 5),  # lots (0 removes the level)
        st.integers(1, 3),  # orders
        st.integers(1, 50),  # the depth read after the change
    ),
    max_size=60,
)


@given(CHANGES)
def test_cached_sides_equal_a_fresh_rendering_after_any_changes(
    changes: list[tuple[int, ...]],
) -> None:
    cache = BookCache()
    bids: dict[int, tuple[int, int]] = {}
    for seq, (price, lots, count, depth) in enumerate(changes, start=1):
        if lots:
            bids[price] = (lots, count)
        else:
            bids.pop(price, None)
        levels = tuple(Level(p, *bids[p]) for p in sorted(bids, reverse=True)[:depth])
        asks = tuple(Level(100 + p, 1, 1) for p in range(min(depth, 3)))
        book = BookSnapshot("BTC/USDT", seq, levels, asks)
        for _ in range(2):  # again at the same sequence: the kept depth
            rendered_bids, rendered_asks = cache.sides(SPEC, book)
            assert orjson.loads(orjson.dumps(rendered_bids)) == levels_json(SPEC, levels)
            assert orjson.loads(orjson.dumps(rendered_asks)) == levels_json(SPEC, asks)
