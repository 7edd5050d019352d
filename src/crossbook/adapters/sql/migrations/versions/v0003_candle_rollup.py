"""Candle rollup: one row per (market, candle width, open time), backfilled from trades.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04

Frozen copy of the `candles` table of `crossbook.adapters.sql.schema` as of
this revision, and of the widths it rolls up (the API's 1m, 5m, 15m, 1h, 4h
and 1d). From here on the writers keep it in the transaction of the trades;
the upgrade fills it from the trades already stored: per market, one
statement aggregates the trades into minutes (the volumes as 32-bit halves, so
SQLite's `sum()` cannot overflow; exact up to 2**31 trades per minute), and
the wider candles are folded from those minutes here, in Python. Open and
close are the prices of the lowest and highest trade id of each candle.

Known limits: the backfill holds one market's minute aggregates in memory at a
time and runs inside the migration's transaction (a large trade history makes
a long first start after the upgrade).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SYMBOL = sa.String(33)
WIDE_INTEGER = sa.Numeric(precision=40, scale=0).with_variant(sa.Text(), "sqlite")
MINUTE_MS = 60_000
ROLLED_UP_INTERVALS_MS = (60_000, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000)
HALF_BITS = 32
INT64_MAX = 2**63 - 1
INSERT_CHUNK_ROWS = 5_000

_trades = sa.table(
    "trades",
    sa.column("trade_id", sa.BigInteger()),
    sa.column("symbol", SYMBOL),
    sa.column("price_ticks", sa.BigInteger()),
    sa.column("quantity_lots", sa.BigInteger()),
    sa.column("notional_units", sa.BigInteger()),
    sa.column("executed_at_ms", sa.BigInteger()),
)


def _bigint(name: str) -> sa.Column[int]:
    return sa.Column(name, sa.BigInteger(), autoincrement=False, nullable=False)


def upgrade() -> None:
    candles = op.create_table(
        "candles",
        sa.Column("symbol", SYMBOL, nullable=False),
        _bigint("interval_ms"),
        _bigint("open_time_ms"),
        _bigint("first_trade_id"),
        _bigint("last_trade_id"),
        _bigint("open_ticks"),
        _bigint("high_ticks"),
        _bigint("low_ticks"),
        _bigint("close_ticks"),
        sa.Column("volume_lots", WIDE_INTEGER, nullable=False),
        sa.Column("quote_volume_units", WIDE_INTEGER, nullable=False),
        _bigint("trade_count"),
        sa.PrimaryKeyConstraint("symbol", "interval_ms", "open_time_ms", name=op.f("pk_candles")),
        sqlite_with_rowid=False,
    )
    assert candles is not None
    connection = op.get_bind()
    as_text = connection.dialect.name == "sqlite"
    symbols = connection.execute(sa.select(_trades.c.symbol).distinct()).scalars().all()
    for symbol in sorted(symbols):
        rows = _candle_rows(connection, symbol, as_text)
        for chunk in _chunks(rows, INSERT_CHUNK_ROWS):
            connection.execute(candles.insert(), chunk)


def downgrade() -> None:
    op.drop_table("candles")


def _minutes(connection: sa.Connection, symbol: str) -> list[list[int]]:
    """[minute, first id, last id, open, high, low, close, volume, quote, count] per
    minute of `symbol` with trades, in minute order."""
    t = _trades.c
    minute = sa.literal(MINUTE_MS, sa.BigInteger())
    per_trade = (
        sa.select(
            (t.executed_at_ms // minute * minute).label("open_time_ms"),
            t.trade_id,
            t.price_ticks,
            t.quantity_lots,
            t.notional_units,
        )
        .where(t.symbol == symbol)
        .subquery("per_trade")
    )
    p = per_trade.c
    buckets = (
        sa.select(
            p.open_time_ms,
            sa.func.min(p.trade_id).label("first_trade_id"),
            sa.func.max(p.trade_id).label("last_trade_id"),
            sa.func.max(p.price_ticks).label("high_ticks"),
            sa.func.min(p.price_ticks).label("low_ticks"),
            *_split_sum(p.quantity_lots, "volume"),
            *_split_sum(p.notional_units, "quote"),
            sa.func.count().label("trade_count"),
        )
        .group_by(p.open_time_ms)
        .subquery("buckets")
    )
    b = buckets.c
    first, last = _trades.alias("first_trade"), _trades.alias("last_trade")
    statement = (
        sa.select(
            b.open_time_ms,
            b.first_trade_id,
            b.last_trade_id,
            first.c.price_ticks,
            b.high_ticks,
            b.low_ticks,
            last.c.price_ticks,
            b.volume_high,
            b.volume_low,
            b.quote_high,
            b.quote_low,
            b.trade_count,
        )
        .select_from(
            buckets.join(first, first.c.trade_id == b.first_trade_id).join(
                last, last.c.trade_id == b.last_trade_id
            )
        )
        .order_by(b.open_time_ms)
    )
    out: list[list[int]] = []
    for row in connection.execute(statement):
        minute_ms, first_id, last_id, open_, high, low, close = (int(v) for v in row[:7])
        volume_high, volume_low, quote_high, quote_low, count = (int(v) for v in row[7:])
        volume = (volume_high << HALF_BITS) + volume_low
        quote = (quote_high << HALF_BITS) + quote_low
        out.append([minute_ms, first_id, last_id, open_, high, low, close, volume, quote, count])
    return out


def _split_sum(column: Any, name: str) -> tuple[Any, Any]:
    high = sa.func.sum(column.op(">>")(sa.literal_column(str(HALF_BITS))))
    low = sa.func.sum(column.op("&")(sa.literal_column(str(2**HALF_BITS - 1))))
    return high.label(f"{name}_high"), low.label(f"{name}_low")


def _candle_rows(connection: sa.Connection, symbol: str, as_text: bool) -> list[dict[str, Any]]:
    """Every rolled-up candle of `symbol`: its minutes, and the wider candles folded
    from them (minutes come in order, so a wider candle is complete once the next
    minute opens past it)."""
    out: list[dict[str, Any]] = []
    open_candles: dict[int, list[int]] = {}  # interval -> [open time, first id, …, count]
    for minute in _minutes(connection, symbol):
        minute_ms = minute[0]
        for interval_ms in ROLLED_UP_INTERVALS_MS:
            open_ms = minute_ms - minute_ms % interval_ms
            kept = open_candles.get(interval_ms)
            if kept is not None and kept[0] == open_ms:
                _merge(kept, minute)
                continue
            if kept is not None:
                out.append(_row(symbol, interval_ms, kept, as_text))
            open_candles[interval_ms] = [open_ms, *minute[1:]]
    for interval_ms, kept in open_candles.items():
        out.append(_row(symbol, interval_ms, kept, as_text))
    return out


def _merge(kept: list[int], minute: list[int]) -> None:
    """Add a minute's trades to a candle: open and close by trade id."""
    if minute[1] < kept[1]:
        kept[1], kept[3] = minute[1], minute[3]  # first id, open
    if minute[2] > kept[2]:
        kept[2], kept[6] = minute[2], minute[6]  # last id, close
    kept[4], kept[5] = max(kept[4], minute[4]), min(kept[5], minute[5])
    kept[7] += minute[7]
    kept[8] += minute[8]
    kept[9] += minute[9]


def _row(symbol: str, interval_ms: int, c: list[int], as_text: bool) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "interval_ms": interval_ms,
        "open_time_ms": c[0],
        "first_trade_id": c[1],
        "last_trade_id": c[2],
        "open_ticks": c[3],
        "high_ticks": c[4],
        "low_ticks": c[5],
        "close_ticks": c[6],
        "volume_lots": _wide(c[7], as_text),
        "quote_volume_units": _wide(c[8], as_text),
        "trade_count": c[9],
    }


def _wide(value: int, as_text: bool) -> int | str:
    """SQLite cannot bind an integer beyond 64 bits: its decimal text (the column's)."""
    return str(value) if as_text and value > INT64_MAX else value


def _chunks(rows: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
