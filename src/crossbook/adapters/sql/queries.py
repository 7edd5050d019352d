"""The store's read queries as SQLAlchemy Core statements (built here, run by `store`).

Pagination is by keyset on the id (`order_id`, `trade_id`), newest first:
- `before_id` alone (or nothing): the `limit` newest rows with an id below it;
- `after_id`: the `limit` oldest rows with an id above it (and below `before_id`
  if given), i.e. the page just newer than `after_id`; still returned newest
  first (the statement reads them oldest first and `Window.reverse` says so).
Ids grow with time (the clock never goes back), so id order is time order.
A time range is inclusive at both ends: `start_ms <= t <= end_ms`.

Every list is bounded: `limit` must be between 1 and `MAX_QUERY_LIMIT`
(`ValueError` otherwise; the gateway validates before it gets here).

Known limit: a user's trades are the union of two index scans (as buyer, as
seller), each reading up to `limit` rows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, TypeAlias

from sqlalchemy import ColumnElement, Select, and_, select, union_all
from sqlalchemy.sql.elements import KeyedColumnElement

from crossbook.adapters.sql.schema import (
    asset_totals,
    assets,
    balances,
    engine_state,
    markets,
    orders,
    trades,
)
from crossbook.domain import OrderStatus

AnySelect: TypeAlias = Select[*tuple[Any, ...]]

MAX_QUERY_LIMIT = 1_000
DEFAULT_QUERY_LIMIT = 100
OPEN_STATUSES = (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED)


@dataclass(frozen=True, slots=True)
class Window:
    """Which rows of a newest-first list: a time range, a keyset position and a limit."""

    limit: int = DEFAULT_QUERY_LIMIT
    before_id: int | None = None
    after_id: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")

    @property
    def reverse(self) -> bool:
        """True if the statement reads oldest first and its rows must be reversed."""
        return self.after_id is not None

    def conditions(
        self, key: KeyedColumnElement[int], time: KeyedColumnElement[int]
    ) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        if self.before_id is not None:
            out.append(key < self.before_id)
        if self.after_id is not None:
            out.append(key > self.after_id)
        if self.start_ms is not None:
            out.append(time >= self.start_ms)
        if self.end_ms is not None:
            out.append(time <= self.end_ms)
        return out

    def order(self, key: KeyedColumnElement[int]) -> ColumnElement[int]:
        return key.asc() if self.reverse else key.desc()


# -- orders ---------------------------------------------------------------------------


def order_of_user(user_id: int, order_id: int) -> AnySelect:
    return select(orders).where(orders.c.order_id == order_id, orders.c.user_id == user_id)


def order_by_client_id(user_id: int, client_order_id: str) -> AnySelect:
    """The newest order of the user with that client id (ids are reusable once closed)."""
    return (
        select(orders)
        .where(orders.c.user_id == user_id, orders.c.client_order_id == client_order_id)
        .order_by(orders.c.order_id.desc())
        .limit(1)
    )


def orders_of_user(
    user_id: int,
    window: Window,
    statuses: Collection[OrderStatus] | None = None,
    symbol: str | None = None,
) -> AnySelect:
    o = orders.c
    where = [o.user_id == user_id, *window.conditions(o.order_id, o.created_at_ms)]
    if statuses is not None:
        where.append(o.status.in_([str(status) for status in statuses]))
    if symbol is not None:
        where.append(o.symbol == symbol)
    return select(orders).where(*where).order_by(window.order(o.order_id)).limit(window.limit)


# -- trades ---------------------------------------------------------------------------


def trades_of_market(symbol: str, window: Window) -> AnySelect:
    t = trades.c
    where = [t.symbol == symbol, *window.conditions(t.trade_id, t.executed_at_ms)]
    return select(trades).where(*where).order_by(window.order(t.trade_id)).limit(window.limit)


def trades_of_user(user_id: int, window: Window, symbol: str | None = None) -> AnySelect:
    t = trades.c
    common = window.conditions(t.trade_id, t.executed_at_ms)
    if symbol is not None:
        common.append(t.symbol == symbol)

    def side(condition: ColumnElement[bool]) -> AnySelect:
        part = (
            select(trades)
            .where(condition, *common)
            .order_by(window.order(t.trade_id))
            .limit(window.limit)
            .subquery()
        )
        return select(part)

    as_buyer = side(t.buyer_user_id == user_id)
    as_seller = side(and_(t.seller_user_id == user_id, t.buyer_user_id != user_id))
    both = union_all(as_buyer, as_seller).subquery()
    return select(both).order_by(window.order(both.c.trade_id)).limit(window.limit)


# -- balances and state --------------------------------------------------------------


def balances_of_user(user_id: int, limit: int = MAX_QUERY_LIMIT) -> AnySelect:
    Window(limit)  # validates the bound
    return (
        select(balances)
        .where(balances.c.user_id == user_id)
        .order_by(balances.c.asset)
        .limit(limit)
    )


def committed_statements() -> list[AnySelect]:
    """What a store needs to know when it opens: counters, assets, markets, asset totals."""
    return [select(engine_state), select(assets), select(markets), select(asset_totals)]


def state_statements() -> list[AnySelect]:
    """What `load_state` reads, in one snapshot: counters, assets, markets, balances,
    asset totals and the open orders."""
    return [
        select(engine_state),
        select(assets),
        select(markets),
        select(balances),
        select(asset_totals),
        select(orders)
        .where(orders.c.status.in_([str(status) for status in OPEN_STATUSES]))
        .order_by(orders.c.order_id),
    ]
