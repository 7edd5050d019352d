"""`GET /v1/holds` in process, over SQLite and PostgreSQL: which holds are listed
(applied ones only: not voided, no tombstone, no other operation), the time bounds
and the user filter, keyset paging (every applied hold exactly once, in order),
refused parameters, authentication, a database failure, how a listing and the
writer leave each other alone, and the index behind it (migration w0002, the plan).

Each test runs the Starlette app of the service on the test's database through
httpx's ASGI transport (no process, no port): `Wallet.get(...)` is a request with the
service token. The service's clock is `Clock`, set by the test, so every hold's
`applied_at_ms` is known. Keys that share an `applied_at_ms` differ only in
zero-padded digits, so their order is the same in every collation.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from random import Random
from typing import Any

import httpx
import pytest
from alembic import command
from sqlalchemy import Connection, inspect

from crossbook.sql_support.migrate import (
    alembic_config,
    current_revision,
    run_with_connection,
    upgrade,
)
from crossbook.wallet_protocol import (
    MAX_HOLDS_LIMIT,
    HoldsCursor,
    WalletAccount,
    WalletHold,
    WalletOp,
    WalletOpKind,
)
from crossbook.wallet_service.app import create_app
from crossbook.wallet_service.model import HoldsQuery, Receipt
from crossbook.wallet_service.service import WalletLimits, WalletService
from crossbook.wallet_service.settings import WalletSettings
from crossbook.wallet_service.store import (
    WALLET_MIGRATIONS,
    WalletStore,
    applied_holds_query,
)

from wallet_support import CREDIT, DEBIT, DEPOSIT, HOLD, RELEASE, VOID, WITHDRAW

TOKEN = "holds-test-service-token-" + "x" * 32
INDEX = "ix_wallet_operations_applied_at_ms_key"
START_MS = 1_700_000_000_000
FAILURE_BOUND_S = 30.0  # a listing or an operation that takes longer is stuck


class Clock:
    """The service's clock: what the test set it to (each batch takes one reading)."""

    def __init__(self) -> None:
        self.now_ms = START_MS

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Wallet:
    service: WalletService
    store: WalletStore
    client: httpx.AsyncClient  # with the service token
    transport: httpx.ASGITransport
    clock: Clock

    async def get(self, query: str | dict[str, Any] = "", **headers: str) -> httpx.Response:
        params = query if isinstance(query, dict) else httpx.QueryParams(query)
        return await self.client.get("/v1/holds", params=params, headers=headers)

    async def page(self, **params: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """A 200 page: its holds and `meta.next`, the envelope checked exactly."""
        response = await self.get({k: str(v) for k, v in params.items()})
        body = response.json()
        assert response.status_code == 200, body
        assert set(body) == {"success", "data", "meta"} and body["success"] is True, body
        assert set(body["meta"]) == {"next"}, body
        return body["data"], body["meta"]["next"]

    async def keys(self, **params: Any) -> list[str]:
        data, next_page = await self.page(**params)
        assert next_page is None, next_page
        return [hold["key"] for hold in data]

    async def every_page(self, **params: Any) -> list[list[dict[str, Any]]]:
        """Every page from the start, passing `meta.next` as the next page's cursor."""
        pages = []
        cursor: dict[str, Any] = {}
        while True:
            data, next_page = await self.page(**params, **cursor)
            pages.append(data)
            if next_page is None:
                return pages
            assert set(next_page) == {"after_applied_at_ms", "after_key"}, next_page
            cursor = next_page

    async def apply(
        self, kind: WalletOpKind, key: str, user_id: int, amount: int = 0, **options: Any
    ) -> Receipt:
        return await self.service.apply(WalletOp(key, kind, user_id, "USDT", amount, **options))

    async def hold_at(self, at_ms: int, key: str, user_id: int = 1, amount: int = 10) -> None:
        self.clock.now_ms = at_ms
        await self.apply(HOLD, key, user_id, amount)

    async def batch(self, at_ms: int, ops: list[WalletOp]) -> None:
        """`ops` applied in one batch (queued together), all stamped `at_ms`."""
        self.clock.now_ms = at_ms
        await asyncio.gather(*(self.service.apply(o) for o in ops))


@asynccontextmanager
async def wallet_api(
    url: str, *, store_type: type[WalletStore] = WalletStore, **options: Any
) -> AsyncIterator[Wallet]:
    store = await store_type.open(url)
    try:
        clock = Clock()
        service = await WalletService.open(store, now_ms=clock, **options)
        app = create_app(WalletSettings(service_token=TOKEN))
        app.state.service = service
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://wallet", headers=headers
        ) as client:
            wallet = Wallet(service, store, client, transport, clock)
            for user_id in (1, 2, 3):
                await wallet.apply(DEPOSIT, f"deposit:{user_id}", user_id, 10**18)
            yield wallet
    finally:
        await store.close()


def run(url: str, scenario: Callable[[Wallet], Awaitable[None]], **options: Any) -> None:
    async def main() -> None:
        async with wallet_api(url, **options) as wallet:
            await scenario(wallet)

    asyncio.run(main())


def hold_view(key: str, at_ms: int, user_id: int = 1, amount: int = 10) -> dict[str, Any]:
    return {
        "key": key,
        "user_id": user_id,
        "asset": "USDT",
        "amount_units": str(amount),
        "applied_at_ms": at_ms,
    }


# -- what is listed ------------------------------------------------------------------------------


def test_an_applied_hold_is_listed_with_exactly_its_fields(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        key = "hold:3f2a9c1e-5d7b-4e8a-9b0c-1d2e3f4a5b6c"
        await wallet.hold_at(START_MS + 5, key, user_id=2, amount=987_654_321_987_654_321)
        response = await wallet.get()
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json() == {
            "success": True,
            "data": [hold_view(key, START_MS + 5, user_id=2, amount=987_654_321_987_654_321)],
            "meta": {"next": None},
        }

    run(wallet_database_url, scenario)


def test_only_holds_that_no_void_released_are_listed(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        t = START_MS + 10
        await wallet.hold_at(t, "hold:1", amount=100)
        await wallet.hold_at(t + 1, "hold:2", amount=100)
        await wallet.hold_at(t + 2, "hold:3", amount=100)
        await wallet.apply(VOID, "void:2", 1, target_key="hold:2")  # voided
        await wallet.apply(VOID, "void:ghost", 1, target_key="hold:ghost")  # a tombstone
        # taken from by later operations, the holds stay applied, listed with what was held
        await wallet.apply(RELEASE, "release:3", 1, 40)
        await wallet.apply(DEBIT, "debit:1", 1, 30, account=WalletAccount.LOCKED)
        await wallet.apply(CREDIT, "credit:1", 2, 30)
        await wallet.apply(WITHDRAW, "withdraw:1", 3, 5)
        # applied and voided in one batch: inserted voided
        await wallet.batch(
            t + 3,
            [
                WalletOp("hold:4", HOLD, 1, "USDT", 7),
                WalletOp("void:4", VOID, 1, "USDT", target_key="hold:4"),
            ],
        )
        expected = [hold_view("hold:1", t, amount=100), hold_view("hold:3", t + 2, amount=100)]
        assert await wallet.page() == (expected, None)
        record = await wallet.service.operation("hold:ghost")
        assert record is not None and record.kind is HOLD  # the tombstone is a hold row
        restarted = await WalletService.open(wallet.store, now_ms=wallet.clock)
        page = await restarted.holds(HoldsQuery())  # read from the database
        assert [hold.key for hold in page.holds] == ["hold:1", "hold:3"] and page.next is None

    run(wallet_database_url, scenario)


def test_the_time_bounds_are_after_exclusive_and_before_inclusive(
    wallet_database_url: str,
) -> None:
    async def scenario(wallet: Wallet) -> None:
        for at_ms, key in ((100, "hold:a"), (200, "hold:b"), (300, "hold:c")):
            await wallet.hold_at(START_MS + at_ms, key)
        t = START_MS
        assert await wallet.keys(applied_before_ms=t + 200) == ["hold:a", "hold:b"]
        assert await wallet.keys(applied_before_ms=t + 199) == ["hold:a"]
        assert await wallet.keys(applied_before_ms=t + 99) == []
        assert await wallet.keys(applied_after_ms=t + 100, applied_before_ms=t + 300) == [
            "hold:b",
            "hold:c",
        ]
        assert await wallet.keys(applied_after_ms=t + 99, applied_before_ms=t + 200) == [
            "hold:a",
            "hold:b",
        ]
        assert await wallet.keys(applied_after_ms=t + 200, applied_before_ms=t + 200) == []
        assert await wallet.keys(applied_after_ms=t + 300, applied_before_ms=t + 100) == []
        assert await wallet.keys(applied_before_ms=0) == []
        assert await wallet.keys(applied_before_ms=2**63 - 1, applied_after_ms=0) == [
            "hold:a",
            "hold:b",
            "hold:c",
        ]

    run(wallet_database_url, scenario)


def test_without_an_upper_bound_the_service_clock_is_the_bound(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        await wallet.hold_at(START_MS + 1_000, "hold:a")
        await wallet.hold_at(START_MS + 2_000, "hold:b")
        wallet.clock.now_ms = START_MS + 1_999
        assert await wallet.keys() == ["hold:a"]
        wallet.clock.now_ms = START_MS + 2_000
        assert await wallet.keys() == ["hold:a", "hold:b"]
        wallet.clock.now_ms = START_MS
        assert await wallet.keys() == []

    run(wallet_database_url, scenario)


def test_the_user_filter(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        for n in range(6):
            await wallet.hold_at(START_MS + n, f"hold:{n}", user_id=1 + n % 2)
        assert await wallet.keys(user_id=1) == ["hold:0", "hold:2", "hold:4"]
        assert await wallet.keys(user_id=2) == ["hold:1", "hold:3", "hold:5"]
        assert await wallet.keys(user_id=3) == []
        assert await wallet.keys(user_id=2**63 - 1) == []
        assert await wallet.keys(user_id=2, applied_after_ms=START_MS + 1) == ["hold:3", "hold:5"]
        pages = await wallet.every_page(user_id=1, limit=2)
        assert [[h["key"] for h in page] for page in pages] == [["hold:0", "hold:2"], ["hold:4"]]

    run(wallet_database_url, scenario)


# -- paging --------------------------------------------------------------------------------------


def test_paging_returns_every_applied_hold_once_in_order(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        rng = Random(7)
        numbers = list(range(60))
        rng.shuffle(numbers)  # key order differs from the order the holds were applied in
        expected: list[tuple[int, str, int]] = []  # (applied_at_ms, key, user) still applied
        batches = [numbers[0:1], numbers[1:20], numbers[20:21], numbers[21:45], numbers[45:60]]
        for b, batch in enumerate(batches):
            at_ms = START_MS + 1_000 * (b + 1)
            ops = [WalletOp(f"hold:{n:04d}", HOLD, 1 + n % 3, "USDT", 10 + n) for n in batch]
            await wallet.batch(at_ms, ops)  # one batch: one applied_at_ms for all its holds
            expected += [(at_ms, o.key, o.user_id) for o in ops]
        for n in numbers[::7]:  # some are voided
            await wallet.apply(VOID, f"void:{n}", 1 + n % 3, target_key=f"hold:{n:04d}")
            expected = [e for e in expected if e[1] != f"hold:{n:04d}"]
        expected.sort()
        everything = [hold_view(key, at, user, 10 + int(key[5:])) for at, key, user in expected]
        count = len(everything)
        bound = START_MS + 10_000
        for limit in (1, 2, 7, count - 1, count, count + 1, MAX_HOLDS_LIMIT):
            pages = await wallet.every_page(applied_before_ms=bound, limit=limit)
            assert [hold for page in pages for hold in page] == everything, limit
            assert len(pages) == max(1, math.ceil(count / limit)), limit  # no empty last page
            assert all(len(page) == limit for page in pages[:-1]), limit
        user_holds = [hold for hold in everything if hold["user_id"] == 2]
        pages = await wallet.every_page(applied_before_ms=bound, user_id=2, limit=4)
        assert [hold for page in pages for hold in page] == user_holds

    run(wallet_database_url, scenario)


def test_a_cursor_in_the_middle_of_one_instant(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        at_ms = START_MS + 500
        await wallet.hold_at(at_ms - 1, "hold:0000")
        await wallet.batch(
            at_ms, [WalletOp(f"hold:{n:04d}", HOLD, 1, "USDT", 10) for n in (3, 1, 2)]
        )
        await wallet.hold_at(at_ms + 1, "hold:0000x")
        data, next_page = await wallet.page(limit=2)
        assert [h["key"] for h in data] == ["hold:0000", "hold:0001"]
        assert next_page == {"after_applied_at_ms": at_ms, "after_key": "hold:0001"}
        data, next_page = await wallet.page(limit=2, **next_page)
        assert [h["key"] for h in data] == ["hold:0002", "hold:0003"]
        assert next_page == {"after_applied_at_ms": at_ms, "after_key": "hold:0003"}
        assert await wallet.keys(limit=2, **next_page) == ["hold:0000x"]
        # a cursor of a hold that is not there (voided meanwhile) still places the page
        assert await wallet.keys(after_applied_at_ms=at_ms, after_key="hold:00015") == [
            "hold:0002",
            "hold:0003",
            "hold:0000x",
        ]

    run(wallet_database_url, scenario)


def test_between_pages_a_voided_hold_drops_out_and_later_holds_stay_out(
    wallet_database_url: str,
) -> None:
    async def scenario(wallet: Wallet) -> None:
        for n in range(4):
            await wallet.hold_at(START_MS + n, f"hold:{n}")
        bound = START_MS + 10
        data, next_page = await wallet.page(applied_before_ms=bound, limit=2)
        assert [h["key"] for h in data] == ["hold:0", "hold:1"] and next_page is not None
        await wallet.apply(VOID, "void:2", 1, target_key="hold:2")
        await wallet.hold_at(bound + 1, "hold:late")
        assert await wallet.keys(applied_before_ms=bound, limit=2, **next_page) == ["hold:3"]

    run(wallet_database_url, scenario)


# -- refusals ------------------------------------------------------------------------------------

TOO_BIG = str(2**63)
BAD_QUERIES = [
    ("limit=0", "limit"),
    ("limit=1001", "limit"),
    ("limit=abc", "limit"),
    ("limit=-1", "limit"),
    ("limit=01", "limit"),
    ("limit=", "limit"),
    ("limit=1.0", "limit"),
    ("applied_before_ms=1.5", "applied_before_ms"),
    ("applied_before_ms=-1", "applied_before_ms"),
    ("applied_before_ms=%2B1", "applied_before_ms"),
    ("applied_before_ms=007", "applied_before_ms"),
    ("applied_before_ms=%201", "applied_before_ms"),
    ("applied_before_ms=%D9%A1", "applied_before_ms"),  # an Arabic-Indic digit
    (f"applied_before_ms={TOO_BIG}", "applied_before_ms"),
    ("applied_after_ms=x", "applied_after_ms"),
    (f"applied_after_ms={TOO_BIG}", "applied_after_ms"),
    ("user_id=a", "user_id"),
    (f"user_id={TOO_BIG}", "user_id"),
    ("user_id=-1", "user_id"),
    ("after_key=hold:1", "query"),
    ("after_applied_at_ms=5", "query"),
    ("after_applied_at_ms=5&after_key=hold%201", "after_key"),
    ("after_applied_at_ms=5&after_key=", "after_key"),
    (f"after_applied_at_ms=5&after_key={'k' * 201}", "after_key"),
    (f"after_applied_at_ms={TOO_BIG}&after_key=hold:1", "after_applied_at_ms"),
    ("after=hold:1", "after"),
    ("status=voided", "status"),
    ("limit=1&limit=2", "limit"),
    ("user_id=1&applied_before_ms=5&user_id=1", "user_id"),
]


def test_bad_parameters_are_refused_with_the_field_named(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        await wallet.hold_at(START_MS, "hold:1")
        for query, field in BAD_QUERIES:
            response = await wallet.get(query)
            body = response.json()
            assert response.status_code == 400, (query, body)
            assert body["success"] is False and set(body) == {"success", "error"}, body
            error = body["error"]
            assert error["code"] == "INVALID_REQUEST", (query, body)
            assert error["message"] == "invalid query parameters", (query, body)
            assert field in [e["field"] for e in error["details"]["errors"]], (query, body)
        assert await wallet.keys() == ["hold:1"]  # and the same service still answers

    run(wallet_database_url, scenario)


def test_the_token_is_required(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        await wallet.hold_at(START_MS, "hold:1")
        wrong = [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, ""]
        for authorization in wrong:
            for query in ("", "limit=0"):  # refused before its parameters are read
                response = await wallet.get(query, Authorization=authorization)
                assert response.status_code == 401, (authorization, response.text)
                assert response.json()["error"]["code"] == "UNAUTHORIZED"
        async with httpx.AsyncClient(
            transport=wallet.transport, base_url="http://wallet"
        ) as anonymous:
            response = await anonymous.get("/v1/holds")
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "UNAUTHORIZED"

    run(wallet_database_url, scenario)


def test_only_get(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        for method in ("POST", "PUT", "DELETE"):
            response = await wallet.client.request(method, "/v1/holds")
            assert response.status_code == 405, response.text
            assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"

    run(wallet_database_url, scenario)


class FailingStore(WalletStore):
    """A real store whose listing of holds cannot reach the database."""

    async def applied_holds(self, *args: Any) -> list[WalletHold]:
        raise OSError("connection refused")


def test_a_database_failure_is_503_wallet_unavailable(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        response = await wallet.get()
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "WALLET_UNAVAILABLE", error
        await wallet.hold_at(START_MS + 1, "hold:1")  # operations go on

    run(wallet_database_url, scenario, store_type=FailingStore)


# -- a listing and the writer --------------------------------------------------------------------


class GatedStore(WalletStore):
    """A real store whose commits, or listings, can be held at a gate."""

    commit_gate: asyncio.Event | None = None
    listing_gate: asyncio.Event | None = None

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.committing = asyncio.Event()
        self.listing = asyncio.Event()
        self.listings_in_store = 0
        self.most_listings_in_store = 0

    async def commit(self, change: Any) -> None:
        self.committing.set()
        if self.commit_gate is not None:
            await self.commit_gate.wait()
        await super().commit(change)

    async def applied_holds(self, *args: Any) -> list[WalletHold]:
        self.listings_in_store += 1
        self.most_listings_in_store = max(self.most_listings_in_store, self.listings_in_store)
        try:
            self.listing.set()
            if self.listing_gate is not None:
                await self.listing_gate.wait()
            return await super().applied_holds(*args)
        finally:
            self.listings_in_store -= 1


def bounded(awaitable: Awaitable[Any]) -> Awaitable[Any]:
    return asyncio.wait_for(awaitable, FAILURE_BOUND_S)


def test_a_listing_does_not_wait_for_a_batch_being_committed(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        store = wallet.store
        assert isinstance(store, GatedStore)
        await wallet.hold_at(START_MS, "hold:1")
        store.commit_gate = asyncio.Event()
        store.committing.clear()
        wallet.clock.now_ms = START_MS + 1
        pending = asyncio.create_task(wallet.apply(HOLD, "hold:2", 1, 10))
        await bounded(store.committing.wait())  # the writer is inside its commit
        assert await bounded(wallet.keys()) == ["hold:1"]  # committed state only
        store.commit_gate.set()
        await bounded(pending)
        assert await wallet.keys() == ["hold:1", "hold:2"]

    run(wallet_database_url, scenario, store_type=GatedStore)


def test_the_writer_does_not_wait_for_a_listing(wallet_database_url: str) -> None:
    async def scenario(wallet: Wallet) -> None:
        store = wallet.store
        assert isinstance(store, GatedStore)
        store.listing_gate = asyncio.Event()
        listing = asyncio.create_task(wallet.get())
        await bounded(store.listing.wait())  # the listing is inside the store
        await bounded(wallet.hold_at(START_MS + 1, "hold:1"))
        store.listing_gate.set()
        response = await bounded(listing)
        assert response.status_code == 200 and response.json()["data"] == []
        assert await wallet.keys() == ["hold:1"]

    run(wallet_database_url, scenario, store_type=GatedStore)


@pytest.mark.parametrize("hold_scans", [1, 3])
def test_listings_reading_at_once_are_bounded(wallet_database_url: str, hold_scans: int) -> None:
    async def scenario(wallet: Wallet) -> None:
        store = wallet.store
        assert isinstance(store, GatedStore)
        await wallet.hold_at(START_MS, "hold:1")
        store.listing_gate = asyncio.Event()
        listings = [asyncio.create_task(wallet.get()) for _ in range(5)]
        await bounded(store.listing.wait())
        for _ in range(20):  # let every listing that may enter the store enter it
            await asyncio.sleep(0)
        assert store.listings_in_store == hold_scans
        store.listing_gate.set()
        for response in await bounded(asyncio.gather(*listings)):
            assert response.status_code == 200
            assert [h["key"] for h in response.json()["data"]] == ["hold:1"]
        assert store.most_listings_in_store == hold_scans

    run(
        wallet_database_url,
        scenario,
        store_type=GatedStore,
        limits=WalletLimits(hold_scans=hold_scans),
    )


# -- the index -----------------------------------------------------------------------------------


def indexes(connection: Connection) -> dict[str, list[str | None]]:
    found = inspect(connection).get_indexes("wallet_operations")
    return {index["name"]: list(index["column_names"]) for index in found if index["name"]}


def test_w0002_adds_the_index_to_a_w0001_database_and_drops_it_on_downgrade(
    fresh_wallet_database_url: str,
) -> None:
    url = fresh_wallet_database_url
    upgrade(url, "w0001", WALLET_MIGRATIONS)
    assert INDEX not in run_with_connection(url, indexes)

    async def before() -> None:
        store = await WalletStore.open(url, migrate=False)
        try:
            service = await WalletService.open(store, now_ms=lambda: START_MS)
            for key, kind, amount in (("d", DEPOSIT, 100), ("h1", HOLD, 10), ("h2", HOLD, 20)):
                await service.apply(WalletOp(key, kind, 1, "USDT", amount))
            await service.apply(WalletOp("v2", VOID, 1, "USDT", target_key="h2"))
        finally:
            await store.close()

    asyncio.run(before())
    upgrade(url, "head", WALLET_MIGRATIONS)
    assert current_revision(url, WALLET_MIGRATIONS) == "w0002"
    assert run_with_connection(url, indexes)[INDEX] == ["applied_at_ms", "key"]

    async def after() -> None:
        async with wallet_api(url) as wallet:
            assert await wallet.keys() == ["h1"]  # rows from before the index are in it

    asyncio.run(after())
    run_with_connection(url, lambda c: command_downgrade(c, "w0001"))
    assert INDEX not in run_with_connection(url, indexes)
    assert current_revision(url, WALLET_MIGRATIONS) == "w0001"


def command_downgrade(connection: Connection, revision: str) -> None:
    command.downgrade(alembic_config(connection, WALLET_MIGRATIONS), revision)


def plan(connection: Connection, query: Any) -> str:
    """The plan the database makes for `query` with its parameters bound. On PostgreSQL
    the generic plan of a prepared statement (what a driver's statement cache settles
    on after a few runs), with sequential scans discouraged since the table is small."""
    compiled = query.compile(dialect=connection.dialect)
    values = tuple(compiled.params[name] for name in compiled.positiontup)
    if connection.dialect.name == "sqlite":
        rows = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string, values)
        return "\n".join(str(row[-1]) for row in rows)
    connection.exec_driver_sql("SET enable_seqscan = off")
    connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
    connection.exec_driver_sql(f"PREPARE holds_plan AS {compiled.string}")
    arguments = ", ".join(_sql_literal(value) for value in values)
    rows = connection.exec_driver_sql(f"EXPLAIN EXECUTE holds_plan({arguments})")
    connection.exec_driver_sql("DEALLOCATE holds_plan")
    return "\n".join(str(row[0]) for row in rows)


def _sql_literal(value: object) -> str:
    if isinstance(value, int):
        return str(value)
    assert isinstance(value, str) and "'" not in value, value
    return f"'{value}'"


@pytest.mark.parametrize(
    "arguments",
    [
        (START_MS, None, None, None, 101),
        (START_MS, START_MS - 50, None, HoldsCursor(START_MS - 10, "hold:5"), 3),
        (START_MS, None, 2, HoldsCursor(START_MS - 10, "hold:5"), 1_001),
    ],
    ids=["first-page", "bounded-after-a-cursor", "one-user-after-a-cursor"],
)
def test_the_listing_reads_a_range_of_the_index(
    wallet_database_url: str, arguments: tuple[Any, ...]
) -> None:
    async def scenario(wallet: Wallet) -> None:
        for n in range(20):
            await wallet.hold_at(START_MS - 20 + n, f"hold:{n}", user_id=1 + n % 2)
        query = applied_holds_query(*arguments)
        found = await wallet.store._runner.run(lambda c: plan(c, query), write=False)
        assert INDEX in found, found
        assert "SCAN wallet_operations" not in found and "Seq Scan" not in found, found
        assert "TEMP B-TREE" not in found and "Sort" not in found, found  # the index's order

    run(wallet_database_url, scenario)
