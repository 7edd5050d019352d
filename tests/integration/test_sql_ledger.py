"""What the store records besides the state: the event log, the trades and the journal.

- every event is in `events`, gap-free, with `payload` the JSON of `to_dict()`;
- `trades` holds exactly the `TradeExecuted` events, settled at execution;
- `ledger_entries`: five legs per trade that sum to zero per asset (fees
  included); deposit and withdrawal legs sum per asset to `asset_totals`, which
  equals the exchange's net deposits and the sum of all balances; and per
  account the legs add up to available + locked (reservations move funds within
  an account, so they need no journal rows).
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict

from sql_store_support import Driver, expected_state, query

from crossbook.adapters.sql import SqlStore
from crossbook.adapters.sql.rows import TRADE_COLUMNS, trade_rows
from crossbook.adapters.sql.schema import LEG_DEPOSIT, LEG_KINDS, LEG_WITHDRAWAL, SETTLED
from crossbook.domain import Tick


async def drive(url: str, seed: int, batches: int) -> Driver:
    driver = Driver(seed)
    async with await SqlStore.open(url) as store:
        driver.setup()
        await store.commit(driver.take_batch())
        for _ in range(batches):
            driver.run(25)
            await store.commit(driver.take_batch())
    return driver


def test_event_log_and_trades_match_the_events(database_url: str) -> None:
    async def scenario() -> None:
        driver = await drive(database_url, seed=31, batches=12)
        rows = await query(
            database_url, "SELECT seq, market_seq, kind, symbol, ts_ms, payload FROM events"
        )
        rows.sort()
        assert [row[0] for row in rows] == list(range(1, driver.exchange.seq + 1))
        for (seq, market_seq, kind, symbol, ts_ms, payload), event in zip(
            rows, driver.events, strict=True
        ):
            data = event.to_dict()
            assert (seq, market_seq, kind, ts_ms) == (
                event.seq,
                event.market_seq,
                event.kind,
                event.ts_ms,
            )
            assert symbol == data.get("symbol")
            assert json.loads(payload) == json.loads(json.dumps(data))

        trades = await query(database_url, f"SELECT {', '.join(TRADE_COLUMNS)} FROM trades")
        assert sorted(trades) == sorted(trade_rows(driver.trades))
        assert len(trades) > 30
        assert {row[TRADE_COLUMNS.index("settlement_status")] for row in trades} == {SETTLED}

    asyncio.run(scenario())


def test_journal_balances_per_trade_and_per_account(database_url: str) -> None:
    async def scenario() -> None:
        driver = await drive(database_url, seed=32, batches=12)
        legs = await query(
            database_url, "SELECT seq, user_id, asset, amount, kind, trade_id FROM ledger_entries"
        )
        per_trade: dict[int, Counter[str]] = defaultdict(Counter)
        kinds: dict[int, list[str]] = defaultdict(list)
        deposits: Counter[str] = Counter()
        accounts: Counter[tuple[int, str]] = Counter()
        for _seq, user_id, asset, amount, kind, trade_id in legs:
            accounts[(user_id, asset)] += amount
            if trade_id is None:
                assert kind in (LEG_DEPOSIT, LEG_WITHDRAWAL)
                assert (amount > 0) == (kind == LEG_DEPOSIT)
                deposits[asset] += amount
            else:
                per_trade[trade_id][asset] += amount
                kinds[trade_id].append(kind)
        assert len(per_trade) == len(driver.trades) > 30
        for trade_id, sums in per_trade.items():
            assert sorted(kinds[trade_id]) == sorted(LEG_KINDS), trade_id
            assert set(sums.values()) == {0}, (trade_id, sums)

        net_deposits = dict(driver.exchange.ledger.net_deposits)
        totals = {a: int(n) for a, n in await query(database_url, "SELECT * FROM asset_totals")}
        assert totals == net_deposits == dict(deposits)

        state = expected_state(driver.exchange)
        balances = {(u, a): available + locked for u, a, available, locked in state["balances"]}
        # zero totals aside (a zero-fee trade credits the fee account 0)
        assert {k: v for k, v in accounts.items() if v} == {k: v for k, v in balances.items() if v}
        per_asset: Counter[str] = Counter()
        for (_user, asset), total in balances.items():
            per_asset[asset] += total
        assert dict(per_asset) == net_deposits

    asyncio.run(scenario())


def test_a_batch_without_events_still_commits_the_clock(database_url: str) -> None:
    async def scenario() -> None:
        driver = Driver(seed=33)
        async with await SqlStore.open(database_url) as store:
            driver.setup()
            await store.commit(driver.take_batch())
            driver.execute(Tick(123_456))
            batch = driver.take_batch()
            assert batch.is_empty
            await store.commit(batch)
            state = await store.load_state()
            assert state == expected_state(driver.exchange)
            assert state["counters"]["now_ms"] == 123_456

    asyncio.run(scenario())
