"""`WalletService` in process, over SQLite and PostgreSQL: idempotency, refusals, voids,
the totals invariant, restarts, failed commits and concurrent operations.

Each scenario runs in `asyncio.run` with a service opened on the test's database;
"restart" means a new store and service on the same database, so what it sees is
only what was committed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from random import Random
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from crossbook.adapters.sql.migrate import (
    alembic_config,
    current_revision,
    run_with_connection,
    upgrade,
)
from crossbook.engine.wallet import WalletAccount, WalletOp, WalletOpKind
from crossbook.wallet_service.model import (
    MAX_ACCOUNT_UNITS,
    InvariantBrokenError,
    OperationStatus,
    Receipt,
    WalletCode,
    WalletError,
)
from crossbook.wallet_service.schema import VERSION_TABLE, metadata
from crossbook.wallet_service.service import WalletService
from crossbook.wallet_service.store import WALLET_MIGRATIONS, WalletStore

HOLD, RELEASE, DEBIT, CREDIT = (
    WalletOpKind.HOLD,
    WalletOpKind.RELEASE,
    WalletOpKind.DEBIT,
    WalletOpKind.CREDIT,
)
DEPOSIT, WITHDRAW, VOID = WalletOpKind.DEPOSIT, WalletOpKind.WITHDRAW, WalletOpKind.VOID
LOCKED = WalletAccount.LOCKED
_keys = itertools.count(1)


def op(
    kind: WalletOpKind,
    user_id: int,
    asset: str,
    amount: int = 0,
    *,
    key: str | None = None,
    account: WalletAccount = WalletAccount.AVAILABLE,
    target: str | None = None,
) -> WalletOp:
    return WalletOp(key or f"k{next(_keys)}", kind, user_id, asset, amount, account, target)


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_700_000_000_000

    def __call__(self) -> int:
        self.now_ms += 1
        return self.now_ms


Scenario = Callable[[WalletService, WalletStore], Awaitable[None]]


async def opened(url: str, **options: Any) -> tuple[WalletService, WalletStore]:
    store = await WalletStore.open(url)
    return await WalletService.open(store, now_ms=options.pop("now_ms", Clock()), **options), store


def run(url: str, scenario: Scenario) -> None:
    async def main() -> None:
        service, store = await opened(url)
        try:
            await scenario(service, store)
        finally:
            await store.close()

    asyncio.run(main())


async def refused(service: WalletService, wallet_op: WalletOp, code: WalletCode) -> WalletError:
    with pytest.raises(WalletError) as caught:
        await service.apply(wallet_op)
    assert caught.value.code is code, caught.value
    return caught.value


async def balances(service: WalletService, user_id: int) -> dict[str, tuple[int, int]]:
    return {b.asset: (b.available, b.locked) for b in await service.balances(user_id)}


async def assert_conserved(service: WalletService) -> None:
    for totals in await service.totals():
        assert totals.total_units + totals.in_transit_units == totals.net_deposits_units, totals


# -- idempotency ---------------------------------------------------------------------------------


def test_replay_returns_the_first_receipt_and_applies_once(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        first = await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="dep-1"))
        again = await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="dep-1"))
        assert not first.replayed and again.replayed
        assert again.record == first.record  # same amount, same applied_at_ms
        assert await balances(service, 1) == {"USDT": (1_000, 0)}
        hold = await service.apply(op(HOLD, 1, "USDT", 400, key="hold-1"))
        assert (await service.apply(op(HOLD, 1, "USDT", 400, key="hold-1"))).record == hold.record
        assert await balances(service, 1) == {"USDT": (600, 400)}
        totals = await service.totals()
        assert [(t.asset, t.total_units, t.net_deposits_units) for t in totals] == [
            ("USDT", 1_000, 1_000)
        ]

    run(wallet_database_url, scenario)


def test_same_key_with_other_parameters_is_refused(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="k-reused"))
        for other in (
            op(DEPOSIT, 1, "USDT", 999, key="k-reused"),
            op(DEPOSIT, 2, "USDT", 1_000, key="k-reused"),
            op(DEPOSIT, 1, "BTC", 1_000, key="k-reused"),
            op(WITHDRAW, 1, "USDT", 1_000, key="k-reused"),
            op(CREDIT, 1, "USDT", 1_000, key="k-reused", account=LOCKED),
        ):
            error = await refused(service, other, WalletCode.IDEMPOTENCY_KEY_REUSED)
            assert error.status == 409
        assert await balances(service, 1) == {"USDT": (1_000, 0)}
        assert await balances(service, 2) == {}

    run(wallet_database_url, scenario)


# -- refusals ------------------------------------------------------------------------------------


def test_insufficient_balance_changes_nothing_and_the_key_can_be_retried(
    wallet_database_url: str,
) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 100))
        withdraw = op(WITHDRAW, 1, "USDT", 150, key="wd-1")
        error = await refused(service, withdraw, WalletCode.INSUFFICIENT_BALANCE)
        assert error.status == 422
        assert error.details == {"asset": "USDT", "required": "150", "available": "100"}
        assert await store.operation("wd-1") is None  # nothing recorded
        for short in (
            op(HOLD, 1, "USDT", 101),
            op(RELEASE, 1, "USDT", 1),  # nothing locked: refused, never an assertion
            op(DEBIT, 1, "USDT", 1, account=LOCKED),
            op(DEBIT, 1, "USDT", 101),
            op(WITHDRAW, 2, "USDT", 1),  # an account that does not exist
        ):
            await refused(service, short, WalletCode.INSUFFICIENT_BALANCE)
        assert await balances(service, 1) == {"USDT": (100, 0)}
        await service.apply(op(DEPOSIT, 1, "USDT", 50))
        retried = await service.apply(withdraw)
        assert not retried.replayed and retried.record.result_units == 150
        assert await balances(service, 1) == {}
        await assert_conserved(service)

    run(wallet_database_url, scenario)


def test_release_more_than_locked_is_refused_with_the_locked_amount(
    wallet_database_url: str,
) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "BTC", 100))
        await service.apply(op(HOLD, 1, "BTC", 30))
        error = await refused(service, op(RELEASE, 1, "BTC", 31), WalletCode.INSUFFICIENT_BALANCE)
        assert error.details == {"asset": "BTC", "required": "31", "locked": "30"}
        await service.apply(op(RELEASE, 1, "BTC", 30))
        assert await balances(service, 1) == {"BTC": (100, 0)}

    run(wallet_database_url, scenario)


def test_an_account_never_exceeds_64_bits(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "BTC", MAX_ACCOUNT_UNITS))
        await service.apply(op(DEPOSIT, 2, "BTC", MAX_ACCOUNT_UNITS))  # the sum is wider
        await service.apply(op(HOLD, 1, "BTC", 5))
        for too_much in (op(DEPOSIT, 1, "BTC", 1), op(CREDIT, 1, "BTC", 1, account=LOCKED)):
            await refused(service, too_much, WalletCode.BALANCE_LIMIT_EXCEEDED)
        await service.apply(op(DEBIT, 1, "BTC", 5, account=LOCKED))
        (totals,) = await service.totals()
        assert totals.net_deposits_units == 2 * MAX_ACCOUNT_UNITS
        assert totals.total_units == 2 * MAX_ACCOUNT_UNITS - 5
        assert totals.in_transit_units == 5

    run(wallet_database_url, scenario)
    run(wallet_database_url, assert_wide_totals_survive_restart)


async def assert_wide_totals_survive_restart(service: WalletService, store: WalletStore) -> None:
    (totals,) = await service.totals()
    assert (totals.net_deposits_units, totals.in_transit_units) == (2 * MAX_ACCOUNT_UNITS, 5)


# -- operations ----------------------------------------------------------------------------------


def test_debit_and_credit_move_through_transit(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        await service.apply(op(HOLD, 1, "USDT", 600))
        # a trade's legs: the buyer's locked quote to the seller's available quote
        await service.apply(op(DEBIT, 1, "USDT", 500, account=LOCKED))
        (mid,) = await service.totals()
        assert (mid.total_units, mid.in_transit_units, mid.net_deposits_units) == (500, 500, 1_000)
        await service.apply(op(CREDIT, 2, "USDT", 500))
        await service.apply(op(DEBIT, 1, "USDT", 100))
        await service.apply(op(CREDIT, 3, "USDT", 100, account=LOCKED))
        assert await balances(service, 1) == {"USDT": (300, 100)}
        assert await balances(service, 2) == {"USDT": (500, 0)}
        assert await balances(service, 3) == {"USDT": (0, 100)}
        (done,) = await service.totals()
        assert (done.total_units, done.in_transit_units, done.net_deposits_units) == (
            1_000,
            0,
            1_000,
        )

    run(wallet_database_url, scenario)


def test_void_of_an_applied_hold_releases_it(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        await service.apply(op(HOLD, 1, "USDT", 300, key="hold-a"))
        await service.apply(op(HOLD, 1, "USDT", 200, key="hold-b"))
        void = await service.apply(op(VOID, 1, "USDT", key="void-a", target="hold-a"))
        assert void.record.result_units == 300 and not void.replayed
        assert await balances(service, 1) == {"USDT": (800, 200)}
        replay = await service.apply(op(VOID, 1, "USDT", key="void-a", target="hold-a"))
        assert replay.replayed and replay.record.result_units == 300
        second = await service.apply(op(VOID, 1, "USDT", key="void-a2", target="hold-a"))
        assert second.record.result_units == 0  # voided already: nothing more released
        assert await balances(service, 1) == {"USDT": (800, 200)}
        await refused(service, op(HOLD, 1, "USDT", 300, key="hold-a"), WalletCode.HOLD_VOIDED)
        hold = await store.operation("hold-a")
        assert hold is not None
        assert (hold.status, hold.voided_by) == (OperationStatus.VOIDED, "void-a")

    run(wallet_database_url, scenario)


def test_void_before_the_hold_refuses_the_hold(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        void = await service.apply(op(VOID, 1, "USDT", key="void-early", target="hold-late"))
        assert void.record.result_units == 0
        error = await refused(
            service, op(HOLD, 1, "USDT", 300, key="hold-late"), WalletCode.HOLD_VOIDED
        )
        assert error.status == 409
        assert await balances(service, 1) == {"USDT": (1_000, 0)}
        # the key stays taken whatever is sent with it
        await refused(
            service, op(DEPOSIT, 1, "USDT", 5, key="hold-late"), WalletCode.IDEMPOTENCY_KEY_REUSED
        )
        replay = await service.apply(op(VOID, 1, "USDT", key="void-early", target="hold-late"))
        assert replay.replayed and replay.record.result_units == 0

    run(wallet_database_url, scenario)


def test_void_target_problems_are_refused(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="a-deposit"))
        await service.apply(op(HOLD, 1, "USDT", 100, key="a-hold"))
        await refused(
            service, op(VOID, 1, "USDT", target="a-deposit"), WalletCode.VOID_TARGET_NOT_HOLD
        )
        await refused(
            service, op(VOID, 2, "USDT", target="a-hold"), WalletCode.VOID_TARGET_MISMATCH
        )
        await refused(service, op(VOID, 1, "BTC", target="a-hold"), WalletCode.VOID_TARGET_MISMATCH)
        await refused(
            service, op(VOID, 1, "USDT", key="self", target="self"), WalletCode.INVALID_REQUEST
        )
        # the hold's funds were moved away by a debit: the void cannot release them
        await service.apply(op(DEBIT, 1, "USDT", 100, account=LOCKED))
        error = await refused(
            service,
            op(VOID, 1, "USDT", key="v-short", target="a-hold"),
            WalletCode.INSUFFICIENT_BALANCE,
        )
        assert error.details["locked"] == "0"
        assert await store.operation("v-short") is None
        hold = await store.operation("a-hold")
        assert hold is not None and hold.status is OperationStatus.APPLIED

    run(wallet_database_url, scenario)


# -- restart, failed commits, invariants ---------------------------------------------------------


def test_a_new_service_on_the_same_database_keeps_everything(wallet_database_url: str) -> None:
    async def before(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="r-dep"))
        await service.apply(op(DEPOSIT, 2, "BTC", 7, key="r-dep2"))
        await service.apply(op(HOLD, 1, "USDT", 250, key="r-hold"))
        await service.apply(op(DEBIT, 1, "USDT", 50, key="r-debit"))
        await service.apply(op(VOID, 1, "USDT", key="r-void", target="r-never"))

    async def after(service: WalletService, store: WalletStore) -> None:
        assert await balances(service, 1) == {"USDT": (700, 250)}
        assert await balances(service, 2) == {"BTC": (7, 0)}
        totals = {t.asset: t for t in await service.totals()}
        assert (totals["USDT"].total_units, totals["USDT"].in_transit_units) == (950, 50)
        assert totals["BTC"].net_deposits_units == 7
        assert (await service.apply(op(HOLD, 1, "USDT", 250, key="r-hold"))).replayed
        await refused(service, op(HOLD, 1, "USDT", 1, key="r-never"), WalletCode.HOLD_VOIDED)
        assert await balances(service, 1) == {"USDT": (700, 250)}

    run(wallet_database_url, before)
    run(wallet_database_url, after)


def test_a_failed_commit_reloads_and_the_retry_applies(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        real_commit = store.commit
        calls: list[str] = []

        async def failing(change: Any) -> None:
            calls.append(change.record.key)
            raise OSError("connection lost before COMMIT")

        store.commit = failing  # type: ignore[method-assign]
        hold = op(HOLD, 1, "USDT", 400, key="fc-hold")
        await refused(service, hold, WalletCode.WALLET_UNAVAILABLE)
        assert calls == ["fc-hold"]
        store.commit = real_commit  # type: ignore[method-assign]
        assert await balances(service, 1) == {"USDT": (1_000, 0)}  # reloaded: not applied
        receipt = await service.apply(hold)
        assert not receipt.replayed
        assert await balances(service, 1) == {"USDT": (600, 400)}

    run(wallet_database_url, scenario)


def test_a_commit_lost_after_commit_replays_on_retry(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        real_commit = store.commit

        async def committed_then_lost(change: Any) -> None:
            await real_commit(change)
            raise OSError("connection lost after COMMIT")

        store.commit = committed_then_lost  # type: ignore[method-assign]
        withdraw = op(WITHDRAW, 1, "USDT", 300, key="lost-wd")
        await refused(service, withdraw, WalletCode.WALLET_UNAVAILABLE)
        store.commit = real_commit  # type: ignore[method-assign]
        assert await balances(service, 1) == {"USDT": (700, 0)}  # the committed truth
        receipt = await service.apply(withdraw)
        assert receipt.replayed
        assert await balances(service, 1) == {"USDT": (700, 0)}
        await assert_conserved(service)

    run(wallet_database_url, scenario)


def test_a_broken_invariant_halts_before_committing(wallet_database_url: str) -> None:
    async def scenario() -> None:
        fatal: list[BaseException] = []
        service, store = await opened(wallet_database_url, on_fatal=fatal.append)
        try:
            await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
            service._memory.ledger.net_deposits["USDT"] += 1  # a bug, simulated
            with pytest.raises(InvariantBrokenError):
                await service.apply(op(DEPOSIT, 1, "USDT", 5, key="after-bug"))
            assert len(fatal) == 1
            await refused(service, op(DEPOSIT, 1, "USDT", 5), WalletCode.WALLET_HALTED)
            assert await store.operation("after-bug") is None
        finally:
            await store.close()
        restarted, store = await opened(wallet_database_url)  # the database is sound
        try:
            assert await balances(restarted, 1) == {"USDT": (1_000, 0)}
        finally:
            await store.close()

    asyncio.run(scenario())


def test_a_database_whose_totals_do_not_add_up_is_refused(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: WalletStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        await service.apply(op(DEPOSIT, 2, "USDT", 10))

    run(wallet_database_url, scenario)

    def corrupt(connection: Connection) -> None:
        table = metadata.tables["wallet_balances"]
        connection.execute(table.update().where(table.c.user_id == 2).values(available=11))

    run_with_connection(wallet_database_url, corrupt)

    async def reopen() -> None:
        store = await WalletStore.open(wallet_database_url)
        try:
            with pytest.raises(InvariantBrokenError):
                await WalletService.open(store)
        finally:
            await store.close()

    asyncio.run(reopen())


# -- concurrency ---------------------------------------------------------------------------------


def random_op(rng: Random, users: int) -> WalletOp:
    kind = rng.choice([HOLD, RELEASE, DEBIT, CREDIT, DEPOSIT, WITHDRAW])
    account = rng.choice(list(WalletAccount)) if kind in (DEBIT, CREDIT) else None
    return op(
        kind,
        rng.randrange(users),
        rng.choice(["BTC", "USDT"]),
        rng.randint(1, 400),
        account=account or WalletAccount.AVAILABLE,
    )


def test_concurrent_operations_keep_conservation(wallet_database_url: str) -> None:
    rng = Random(7)
    users = 6
    funding = [op(DEPOSIT, u, a, 1_000) for u in range(users) for a in ("BTC", "USDT")]
    ops = [random_op(rng, users) for _ in range(300)]
    funding.append(op(DEPOSIT, 99, "USDT", 10))  # a user the random operations leave alone
    replayed = op(HOLD, 99, "USDT", 10, key="same-key")

    async def scenario(service: WalletService, store: WalletStore) -> None:
        await asyncio.gather(*(service.apply(o) for o in funding))

        async def attempt(wallet_op: WalletOp) -> Receipt | WalletError:
            try:
                return await service.apply(wallet_op)
            except WalletError as error:
                assert error.code is WalletCode.INSUFFICIENT_BALANCE, error
                return error

        results = await asyncio.gather(
            *(attempt(o) for o in ops), *(attempt(replayed) for _ in range(10))
        )
        same_key = results[len(ops) :]
        assert all(isinstance(r, Receipt) for r in same_key), same_key
        assert (
            sorted(r.replayed for r in same_key if isinstance(r, Receipt)) == [False] + [True] * 9
        )
        assert await balances(service, 99) == {"USDT": (0, 10)}  # held once
        applied = [o for o, r in zip(ops, results, strict=False) if isinstance(r, Receipt)]
        assert 0 < len(applied) < len(ops)  # some refused, most applied
        for wallet_op in applied:
            assert await store.operation(wallet_op.key) is not None
        for wallet_op, result in zip(ops, results, strict=False):
            if isinstance(result, WalletError):
                assert await store.operation(wallet_op.key) is None
        await assert_conserved(service)
        memory = {u: await balances(service, u) for u in range(users)}
        totals = await service.totals()
        restarted, restarted_store = await opened(wallet_database_url)
        try:
            assert {u: await balances(restarted, u) for u in range(users)} == memory
            assert await restarted.totals() == totals
        finally:
            await restarted_store.close()

    run(wallet_database_url, scenario)


# -- migrations ----------------------------------------------------------------------------------


def schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, metadata))


def test_migrations_create_exactly_the_schema(fresh_wallet_database_url: str) -> None:
    url = fresh_wallet_database_url
    assert current_revision(url, WALLET_MIGRATIONS) is None
    upgrade(url, "head", WALLET_MIGRATIONS)
    assert current_revision(url, WALLET_MIGRATIONS) == "w0001"
    assert current_revision(url) is None  # the engine's history is another one
    assert run_with_connection(url, schema_diff) == []
    tables = run_with_connection(url, lambda c: set(inspect(c).get_table_names()))
    assert tables == {*metadata.tables, VERSION_TABLE}
    run_with_connection(
        url, lambda c: command.downgrade(alembic_config(c, WALLET_MIGRATIONS), "base")
    )
    tables = run_with_connection(url, lambda c: set(inspect(c).get_table_names()))
    assert tables == {VERSION_TABLE}
    upgrade(url, "head", WALLET_MIGRATIONS)
    assert run_with_connection(url, schema_diff) == []
