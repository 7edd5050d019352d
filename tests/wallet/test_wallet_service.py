"""`WalletService` in process, over SQLite and PostgreSQL: idempotency, refusals, voids,
the totals invariant, restarts, failed commits, concurrent operations and group commit
(repeated keys in one batch, a batch against one-by-one application, failed batch
commits, the bounded queue, cancelled callers).

Each scenario runs in `asyncio.run` with a service opened on the test's database;
"restart" means a new store and service on the same database, so what it sees is
only what was committed. `ScriptedStore` is a real store that records its commits and
can fail them or hold them at a gate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from random import Random
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from crossbook.adapters.sql.migrate import ENGINE_MIGRATIONS
from crossbook.sql_support.database import DatabaseUrl
from crossbook.sql_support.migrate import (
    alembic_config,
    current_revision,
    run_with_connection,
    upgrade,
)
from crossbook.wallet_protocol import (
    WalletAccount,
    WalletBalance,
    WalletCode,
    WalletOp,
    WalletOpKind,
)
from crossbook.wallet_service.model import (
    MAX_ACCOUNT_UNITS,
    InvariantBrokenError,
    OperationRecord,
    OperationStatus,
    Receipt,
    WalletError,
)
from crossbook.wallet_service.schema import VERSION_TABLE, metadata
from crossbook.wallet_service.service import WalletLimits, WalletService
from crossbook.wallet_service.store import (
    MAX_KEYS_PER_STATEMENT,
    WALLET_MIGRATIONS,
    AssetTotals,
    Change,
    WalletStore,
)

from wallet_support import CREDIT, DEBIT, DEPOSIT, HOLD, RELEASE, VOID, WITHDRAW

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


BEFORE_COMMIT, AFTER_COMMIT = "before COMMIT", "after COMMIT"


class ScriptedStore(WalletStore):
    """A real store that records every commit, can fail the next ones (the connection
    lost before or after COMMIT), and can hold commits until a gate opens."""

    def __init__(self, db: DatabaseUrl, runner: Any) -> None:
        super().__init__(db, runner)
        self.commits: list[Change] = []  # every commit attempted, in order
        self.failures: list[str] = []  # BEFORE_COMMIT or AFTER_COMMIT, one per coming commit
        self.gate: asyncio.Event | None = None  # when set, a commit waits for it to open
        self.committing = asyncio.Event()  # set when a commit starts

    async def commit(self, change: Change) -> None:
        self.commits.append(change)
        self.committing.set()
        if self.gate is not None:
            await self.gate.wait()
        failure = self.failures.pop(0) if self.failures else None
        if failure == BEFORE_COMMIT:
            raise OSError("connection lost before COMMIT")
        await super().commit(change)
        if failure == AFTER_COMMIT:
            raise OSError("connection lost after COMMIT")

    def hold_commits(self) -> asyncio.Event:
        """From now on commits wait for the returned gate."""
        self.committing.clear()
        self.gate = asyncio.Event()
        return self.gate


ScriptedScenario = Callable[[WalletService, ScriptedStore], Awaitable[None]]


def run_scripted(url: str, scenario: ScriptedScenario, **options: Any) -> None:
    async def main() -> None:
        store = await ScriptedStore.open(url)
        try:
            options.setdefault("now_ms", Clock())
            service = await WalletService.open(store, **options)
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
    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        store.failures.append(BEFORE_COMMIT)
        hold = op(HOLD, 1, "USDT", 400, key="fc-hold")
        await refused(service, hold, WalletCode.WALLET_UNAVAILABLE)
        assert [r.key for r in store.commits[-1].records] == ["fc-hold"]
        assert await balances(service, 1) == {"USDT": (1_000, 0)}  # reloaded: not applied
        receipt = await service.apply(hold)
        assert not receipt.replayed
        assert await balances(service, 1) == {"USDT": (600, 400)}

    run_scripted(wallet_database_url, scenario)


def test_a_commit_lost_after_commit_replays_on_retry(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
        store.failures.append(AFTER_COMMIT)
        withdraw = op(WITHDRAW, 1, "USDT", 300, key="lost-wd")
        await refused(service, withdraw, WalletCode.WALLET_UNAVAILABLE)
        assert await balances(service, 1) == {"USDT": (700, 0)}  # the committed truth
        receipt = await service.apply(withdraw)
        assert receipt.replayed
        assert await balances(service, 1) == {"USDT": (700, 0)}
        await assert_conserved(service)

    run_scripted(wallet_database_url, scenario)


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


# -- group commit --------------------------------------------------------------------------------

Outcome = tuple[object, ...]


async def outcome(service: WalletService, wallet_op: WalletOp) -> Outcome:
    """What `apply` answered, comparable across runs: a refusal's code, or (replayed, amount)."""
    try:
        receipt = await service.apply(wallet_op)
    except WalletError as error:
        return ("refused", error.code)
    return ("applied", receipt.replayed, receipt.record.result_units)


def without_time(records: dict[str, OperationRecord]) -> dict[str, OperationRecord]:
    return {key: dataclasses.replace(r, applied_at_ms=0) for key, r in records.items()}


async def snapshot(
    service: WalletService, store: WalletStore, keys: list[str], users: range
) -> tuple[object, ...]:
    """Everything observable: balances, totals, and the rows of `keys` (times left out)."""
    return (
        {u: await balances(service, u) for u in users},
        await service.totals(),
        without_time(await store.operations(keys)),
    )


def test_duplicate_keys_in_one_batch_behave_as_if_committed_one_by_one(
    wallet_database_url: str,
) -> None:
    batch = [
        op(HOLD, 1, "USDT", 400, key="h1"),
        op(HOLD, 1, "USDT", 400, key="h1"),  # replays the hold before it
        op(HOLD, 1, "USDT", 300, key="h1"),  # same key, other request
        op(VOID, 1, "USDT", key="v1", target="h1"),  # releases the hold of this batch
        op(HOLD, 1, "USDT", 400, key="h1"),  # voided now
        op(VOID, 1, "USDT", key="v2", target="h1"),  # voided already: releases nothing
        op(VOID, 1, "USDT", key="v1", target="h1"),  # replays the first void
        op(VOID, 1, "USDT", key="v3", target="late"),  # a tombstone for a hold to come
        op(VOID, 1, "USDT", key="v4", target="late"),  # targets the tombstone
        op(HOLD, 1, "USDT", 50, key="late"),
        op(DEPOSIT, 1, "USDT", 5, key="late"),
        op(VOID, 1, "USDT", key="v5", target="stored-hold"),  # a hold committed before
        op(HOLD, 1, "USDT", 100, key="stored-hold"),
        op(WITHDRAW, 1, "USDT", 1_000, key="w1"),  # needs both holds released
        op(WITHDRAW, 1, "USDT", 1_000, key="w1"),
        op(WITHDRAW, 1, "USDT", 1, key="w2"),  # nothing left: refused, recorded nothing
        op(DEPOSIT, 1, "USDT", 1, key="w2"),  # the refused key is free again
    ]
    expected = [
        ("applied", False, 400),
        ("applied", True, 400),
        ("refused", WalletCode.IDEMPOTENCY_KEY_REUSED),
        ("applied", False, 400),
        ("refused", WalletCode.HOLD_VOIDED),
        ("applied", False, 0),
        ("applied", True, 400),
        ("applied", False, 0),
        ("applied", False, 0),
        ("refused", WalletCode.HOLD_VOIDED),
        ("refused", WalletCode.IDEMPOTENCY_KEY_REUSED),
        ("applied", False, 100),
        ("refused", WalletCode.HOLD_VOIDED),
        ("applied", False, 1_000),
        ("applied", True, 1_000),
        ("refused", WalletCode.INSUFFICIENT_BALANCE),
        ("applied", False, 1),
    ]
    keys = sorted({o.key for o in batch} | {"late", "stored-hold"})

    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="funds"))
        await service.apply(op(HOLD, 1, "USDT", 100, key="stored-hold"))
        committed = len(store.commits)
        assert await asyncio.gather(*(outcome(service, o) for o in batch)) == expected
        assert len(store.commits) == committed + 1  # the whole batch: one transaction
        assert await balances(service, 1) == {"USDT": (1, 0)}
        await assert_conserved(service)
        rows = await store.operations(keys)
        assert (rows["h1"].status, rows["h1"].voided_by) == (OperationStatus.VOIDED, "v1")
        assert (rows["late"].status, rows["late"].voided_by) == (OperationStatus.TOMBSTONE, "v3")
        assert rows["stored-hold"].status is OperationStatus.VOIDED
        assert rows["v1"].result_units == 400 and rows["v5"].result_units == 100
        assert rows["w2"].kind is DEPOSIT
        restarted, restarted_store = await opened(wallet_database_url)
        try:
            assert await snapshot(restarted, restarted_store, keys, range(2)) == await snapshot(
                service, store, keys, range(2)
            )
        finally:
            await restarted_store.close()

    run_scripted(wallet_database_url, scenario)


def random_colliding_op(rng: Random, keys: list[str], earlier: list[WalletOp]) -> WalletOp:
    """An operation drawn from a few keys, so that keys, voids and holds collide."""
    if earlier and rng.random() < 0.25:
        return rng.choice(earlier)  # the same request again
    kind = rng.choice([HOLD, HOLD, VOID, VOID, RELEASE, DEBIT, CREDIT, DEPOSIT, WITHDRAW])
    user_id, asset = rng.randrange(2), rng.choice(["BTC", "USDT"])
    if kind is VOID:
        return op(VOID, user_id, asset, key=rng.choice(keys), target=rng.choice(keys))
    account = rng.choice(list(WalletAccount)) if kind in (DEBIT, CREDIT) else None
    return op(
        kind,
        user_id,
        asset,
        rng.randint(1, 300),
        key=rng.choice(keys),
        account=account or WalletAccount.AVAILABLE,
    )


@pytest.mark.parametrize("seed", range(4))
def test_a_batch_answers_and_stores_what_one_by_one_would(
    wallet_database_url: str, tmp_path: Path, seed: int
) -> None:
    rng = Random(seed)
    keys = [f"c{seed}-{i}" for i in range(80)]
    funding = [op(DEPOSIT, u, a, 500) for u in range(2) for a in ("BTC", "USDT")]
    ops: list[WalletOp] = []
    for _ in range(200):
        ops.append(random_colliding_op(rng, keys, ops))

    async def one_by_one() -> tuple[list[Outcome], tuple[object, ...]]:
        service, store = await opened(f"sqlite:///{tmp_path / 'one-by-one.db'}")
        try:
            for wallet_op in funding:
                await service.apply(wallet_op)
            outcomes = [await outcome(service, o) for o in ops]
            return outcomes, await snapshot(service, store, keys, range(2))
        finally:
            await store.close()

    reference = asyncio.run(one_by_one())
    assert {o[0] for o in reference[0]} == {"applied", "refused"}

    async def batched(service: WalletService, store: ScriptedStore) -> None:
        await asyncio.gather(*(service.apply(o) for o in funding))
        committed = len(store.commits)
        outcomes = await asyncio.gather(*(outcome(service, o) for o in ops))
        assert len(store.commits) == committed + 1
        assert (outcomes, await snapshot(service, store, keys, range(2))) == reference

    run_scripted(wallet_database_url, batched)


@pytest.mark.parametrize("failure", [BEFORE_COMMIT, AFTER_COMMIT])
def test_a_failed_batch_commit_fails_every_operation_and_the_retry_settles_it(
    wallet_database_url: str, failure: str
) -> None:
    batch = [
        op(HOLD, 1, "USDT", 100, key="b-hold"),
        op(DEPOSIT, 2, "BTC", 5, key="b-dep"),
        op(DEPOSIT, 1, "USDT", 1_000, key="base"),  # a replay of a committed operation
        op(WITHDRAW, 1, "USDT", 5_000, key="b-short"),  # a refusal
        op(VOID, 1, "USDT", key="b-void", target="b-hold"),
    ]
    if failure == BEFORE_COMMIT:  # nothing of the batch committed: the retry applies it
        retried = [
            ("applied", False, 100),
            ("applied", False, 5),
            ("applied", True, 1_000),
            ("refused", WalletCode.INSUFFICIENT_BALANCE),
            ("applied", False, 100),
        ]
    else:  # all of it committed: the retry replays it (the hold is voided by then)
        retried = [
            ("refused", WalletCode.HOLD_VOIDED),
            ("applied", True, 5),
            ("applied", True, 1_000),
            ("refused", WalletCode.INSUFFICIENT_BALANCE),
            ("applied", True, 100),
        ]

    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 1_000, key="base"))
        store.failures.append(failure)
        unavailable = ("refused", WalletCode.WALLET_UNAVAILABLE)
        assert await asyncio.gather(*(outcome(service, o) for o in batch)) == [unavailable] * 5
        assert len(store.commits) == 2
        assert {r.key for r in store.commits[1].records} == {"b-hold", "b-dep", "b-void"}
        stored = await store.operations([o.key for o in batch])
        if failure == BEFORE_COMMIT:
            assert set(stored) == {"base"}
            assert await balances(service, 1) == {"USDT": (1_000, 0)}  # reloaded
        else:
            assert set(stored) == {"base", "b-hold", "b-dep", "b-void"}
        assert await asyncio.gather(*(outcome(service, o) for o in batch)) == retried
        assert await balances(service, 1) == {"USDT": (1_000, 0)}
        assert await balances(service, 2) == {"BTC": (5, 0)}
        await assert_conserved(service)

    run_scripted(wallet_database_url, scenario)


def test_concurrent_operations_share_transactions(wallet_database_url: str) -> None:
    ops = [
        op(DEPOSIT if n % 2 else CREDIT, n % 7, "USDT", n + 1, key=f"many-{n}") for n in range(300)
    ]

    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        receipts = await asyncio.gather(*(service.apply(o) for o in ops))
        assert not any(r.replayed for r in receipts)
        sizes = [len(change.records) for change in store.commits]
        assert sum(sizes) == len(ops)
        assert len(sizes) < len(ops) // 10  # many operations per transaction
        assert max(sizes) <= service.limits.max_batch_operations == 64
        (totals,) = await service.totals()
        credits = sum(o.amount_units for o in ops if o.kind is CREDIT)
        assert totals.in_transit_units == -credits
        assert totals.total_units == sum(o.amount_units for o in ops)

    run_scripted(wallet_database_url, scenario, limits=WalletLimits(max_batch_operations=64))


def test_a_full_queue_refuses_at_once_and_the_retry_applies(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        gate = store.hold_commits()
        first = asyncio.create_task(service.apply(op(DEPOSIT, 1, "USDT", 1)))
        await store.committing.wait()  # the writer holds `first` in its commit
        queued = [asyncio.create_task(service.apply(op(DEPOSIT, 1, "USDT", 1))) for _ in range(2)]
        while service.queue_depth < 2:
            await asyncio.sleep(0)
        overflow = op(DEPOSIT, 1, "USDT", 1, key="overflow")
        await refused(service, overflow, WalletCode.WALLET_UNAVAILABLE)
        gate.set()
        await asyncio.gather(first, *queued)
        assert not (await service.apply(overflow)).replayed
        assert await balances(service, 1) == {"USDT": (4, 0)}

    run_scripted(wallet_database_url, scenario, limits=WalletLimits(queue_capacity=2))


def test_a_queued_operation_runs_even_if_its_caller_is_cancelled(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        gate = store.hold_commits()
        first = asyncio.create_task(service.apply(op(DEPOSIT, 1, "USDT", 10)))
        await store.committing.wait()
        cancelled = asyncio.create_task(service.apply(op(DEPOSIT, 1, "USDT", 5, key="gone")))
        while service.queue_depth < 1:
            await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        gate.set()
        await first
        await service.apply(op(DEPOSIT, 1, "USDT", 1))  # queued after it: committed after it
        assert await store.operation("gone") is not None
        assert await balances(service, 1) == {"USDT": (16, 0)}

    run_scripted(wallet_database_url, scenario)


def test_reads_wait_for_the_batch_being_committed(wallet_database_url: str) -> None:
    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        gate = store.hold_commits()
        deposit = asyncio.create_task(service.apply(op(DEPOSIT, 1, "USDT", 10)))
        await store.committing.wait()  # applied in memory, not yet committed
        read = asyncio.create_task(balances(service, 1))
        for _ in range(10):
            await asyncio.sleep(0)
        assert not read.done()
        gate.set()
        assert await read == {"USDT": (10, 0)}
        await deposit

    run_scripted(wallet_database_url, scenario)


def test_a_broken_invariant_fails_the_whole_batch(wallet_database_url: str) -> None:
    async def scenario() -> None:
        fatal: list[BaseException] = []
        service, store = await opened(wallet_database_url, on_fatal=fatal.append)
        try:
            await service.apply(op(DEPOSIT, 1, "USDT", 1_000))
            service._memory.ledger.net_deposits["USDT"] += 1  # a bug, simulated
            batch = [
                op(DEPOSIT, 2, "BTC", 5, key="ib-btc"),
                op(DEPOSIT, 1, "USDT", 5, key="ib-usdt"),
                op(HOLD, 1, "USDT", 5, key="ib-hold"),
            ]
            results = await asyncio.gather(
                *(service.apply(o) for o in batch), return_exceptions=True
            )
            assert all(isinstance(r, InvariantBrokenError) for r in results), results
            assert len(fatal) == 1
            assert await store.operations([o.key for o in batch]) == {}
            await refused(service, op(DEPOSIT, 1, "USDT", 5), WalletCode.WALLET_HALTED)
        finally:
            await store.close()

    asyncio.run(scenario())


def test_the_writer_survives_an_unexpected_error(wallet_database_url: str) -> None:
    clock, bug = Clock(), [False]

    def now_ms() -> int:
        if bug[0]:
            bug[0] = False
            raise RuntimeError("a bug, simulated")
        return clock()

    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        await service.apply(op(DEPOSIT, 1, "USDT", 10))
        bug[0] = True  # the next batch meets it
        deposit = op(DEPOSIT, 1, "USDT", 5, key="after-bug")
        await refused(service, deposit, WalletCode.WALLET_UNAVAILABLE)
        assert await store.operation("after-bug") is None
        assert not (await service.apply(deposit)).replayed
        assert await balances(service, 1) == {"USDT": (15, 0)}

    run_scripted(wallet_database_url, scenario, now_ms=now_ms)


def test_concurrent_retrying_clients_apply_each_key_once(wallet_database_url: str) -> None:
    """Clients send random operations, some twice at once, through failed commits (lost
    before or after COMMIT), retrying WALLET_UNAVAILABLE with the same key; every balance
    then equals what the stored rows say, each applied exactly once."""
    rng = Random(11)
    users, assets = range(5), ("BTC", "USDT")
    funding = [op(DEPOSIT, u, a, 2_000) for u in users for a in assets]
    ops: list[WalletOp] = []
    for n in range(400):
        if rng.random() < 0.15:
            ops.append(op(VOID, rng.choice(users), rng.choice(assets), target=f"hold-{n // 2}"))
        elif rng.random() < 0.3:
            ops.append(op(HOLD, rng.choice(users), rng.choice(assets), 50, key=f"hold-{n}"))
        else:
            ops.append(random_op(rng, len(users)))
    sent = ops + rng.sample(ops, 100)  # a hundred of them sent twice, concurrently
    rng.shuffle(sent)

    retried: list[str] = []

    async def client(service: WalletService, wallet_op: WalletOp) -> Receipt | WalletError:
        while True:
            try:
                return await service.apply(wallet_op)
            except WalletError as error:
                if error.code is not WalletCode.WALLET_UNAVAILABLE:
                    return error
                retried.append(wallet_op.key)

    async def scenario(service: WalletService, store: ScriptedStore) -> None:
        await asyncio.gather(*(service.apply(o) for o in funding))
        store.failures += [NO_FAILURE, BEFORE_COMMIT, NO_FAILURE, AFTER_COMMIT, BEFORE_COMMIT]
        results = await asyncio.gather(*(client(service, o) for o in sent))
        assert store.failures == []  # every failure happened
        assert len(retried) >= 3  # each failed commit failed its batch's operations
        assert len(store.commits) < len(sent)
        receipts: dict[str, set[OperationRecord]] = {}
        for wallet_op, result in zip(sent, results, strict=True):
            if isinstance(result, Receipt):
                receipts.setdefault(wallet_op.key, set()).add(result.record)
            else:
                assert result.code in REFUSALS, result
        assert all(len(records) == 1 for records in receipts.values())  # one receipt per key
        rows = await store.operations([o.key for o in [*funding, *ops]])
        for key, (record,) in receipts.items():
            assert dataclasses.replace(record, status=rows[key].status, voided_by=None) == (
                dataclasses.replace(rows[key], voided_by=None)
            )
        expected = balances_from_rows(rows.values())
        assert {u: await balances(service, u) for u in users} == expected
        await assert_conserved(service)
        restarted, restarted_store = await opened(wallet_database_url)
        try:
            assert {u: await balances(restarted, u) for u in users} == expected
            assert await restarted.totals() == await service.totals()
        finally:
            await restarted_store.close()

    run_scripted(wallet_database_url, scenario, limits=WalletLimits(max_batch_operations=50))


def test_the_store_reads_and_writes_a_batch_whatever_its_size(wallet_database_url: str) -> None:
    count = MAX_KEYS_PER_STATEMENT * 2 + 10  # more keys than one statement takes

    async def scenario() -> None:
        store = await WalletStore.open(wallet_database_url)
        try:
            holds = [
                OperationRecord.of(op(HOLD, 1, "USDT", 1, key=f"s-hold-{n}"), 1, 5)
                for n in range(count)
            ]
            await store.commit(
                Change(
                    holds,
                    [WalletBalance(1, "USDT", 0, count)],
                    [AssetTotals("USDT", count, 0)],
                )
            )
            found = await store.operations([r.key for r in holds] + ["s-absent"])
            assert found == {r.key: r for r in holds}
            voided = {f"s-hold-{n}": f"s-void-{n}" for n in range(count - 1)}
            voids = [
                OperationRecord.of(op(VOID, 1, "USDT", key=v, target=h), 1, 6)
                for h, v in voided.items()
            ]
            await store.commit(
                Change(voids, [WalletBalance(1, "USDT", count - 1, 1)], voided=voided)
            )
            found = await store.operations(voided)
            assert {h: (r.status, r.voided_by) for h, r in found.items()} == {
                h: (OperationStatus.VOIDED, v) for h, v in voided.items()
            }
            # a hold no longer applied fails the whole transaction
            last = f"s-hold-{count - 1}"
            late = OperationRecord.of(op(VOID, 1, "USDT", key="s-late", target=last), 1, 7)
            with pytest.raises(RuntimeError):
                await store.commit(Change([late], voided={last: "s-late", "s-hold-0": "s-late"}))
            assert await store.operation("s-late") is None
            still = await store.operation(last)
            assert still is not None and still.status is OperationStatus.APPLIED
            state = await store.load()
            assert state.balances == [WalletBalance(1, "USDT", count - 1, 1)]
        finally:
            await store.close()

    asyncio.run(scenario())


NO_FAILURE = ""
REFUSALS = {
    WalletCode.INSUFFICIENT_BALANCE,
    WalletCode.HOLD_VOIDED,
    WalletCode.VOID_TARGET_MISMATCH,
    WalletCode.IDEMPOTENCY_KEY_REUSED,
}


def balances_from_rows(rows: Iterable[OperationRecord]) -> dict[int, dict[str, tuple[int, int]]]:
    """Per user, asset -> (available, locked) as the stored operations add up."""
    accounts: dict[tuple[int, str], list[int]] = {}
    for row in rows:
        if row.status is OperationStatus.TOMBSTONE:
            continue
        account = accounts.setdefault((row.user_id, row.asset), [0, 0])
        side = 1 if row.account is LOCKED else 0
        amount = row.result_units
        match row.kind:
            case WalletOpKind.DEPOSIT:
                account[0] += amount
            case WalletOpKind.WITHDRAW:
                account[0] -= amount
            case WalletOpKind.HOLD:
                account[0] -= amount
                account[1] += amount
            case WalletOpKind.RELEASE | WalletOpKind.VOID:
                account[0] += amount
                account[1] -= amount
            case WalletOpKind.DEBIT:
                account[side] -= amount
            case WalletOpKind.CREDIT:
                account[side] += amount
    out: dict[int, dict[str, tuple[int, int]]] = {}
    for (user_id, asset), (available, locked) in sorted(accounts.items()):
        if available or locked:
            out.setdefault(user_id, {})[asset] = (available, locked)
    return out


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
    assert current_revision(url, WALLET_MIGRATIONS) == "w0002"
    assert current_revision(url, ENGINE_MIGRATIONS) is None  # the engine's history is another one
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
