"""Migrations create exactly the schema `crossbook.adapters.sql.schema` defines."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from crossbook.adapters.sql.candle_rows import ROLLED_UP_INTERVALS_MS
from crossbook.adapters.sql.migrate import alembic_config, current_revision, upgrade
from crossbook.adapters.sql.migrations.versions import v0003_candle_rollup
from crossbook.adapters.sql.queries import state_statements
from crossbook.adapters.sql.rows import EVENT_COLUMNS, LEDGER_COLUMNS, TRADE_COLUMNS
from crossbook.adapters.sql.schema import metadata, orders
from crossbook.domain.orders import RECORD_FIELDS
from crossbook.sql_support.migrate import run_with_connection


def schema_diff(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def test_migrations_create_exactly_the_metadata(fresh_database_url: str) -> None:
    url = fresh_database_url
    assert current_revision(url) is None
    upgrade(url)
    assert current_revision(url) == "0005"
    assert run_with_connection(url, schema_diff) == []
    assert run_with_connection(url, table_names) == {*metadata.tables, "alembic_version"}
    upgrade(url)  # idempotent
    assert run_with_connection(url, schema_diff) == []


def test_downgrade_to_base_and_back(fresh_database_url: str) -> None:
    url = fresh_database_url
    upgrade(url)
    run_with_connection(url, lambda c: command.downgrade(alembic_config(c), "base"))
    assert run_with_connection(url, table_names) == {"alembic_version"}
    upgrade(url)
    assert run_with_connection(url, schema_diff) == []


def test_columns_follow_the_domain_records() -> None:
    assert tuple(orders.columns.keys()) == RECORD_FIELDS
    assert set(EVENT_COLUMNS) == set(metadata.tables["events"].columns.keys())
    assert set(TRADE_COLUMNS) == set(metadata.tables["trades"].columns.keys())
    assert {"id", *LEDGER_COLUMNS} == set(metadata.tables["ledger_entries"].columns.keys())


def test_the_rollup_was_backfilled_for_every_width_the_writers_keep() -> None:
    """Widths added to the rollup later need a migration that backfills them."""
    assert v0003_candle_rollup.ROLLED_UP_INTERVALS_MS == ROLLED_UP_INTERVALS_MS


def test_recovery_reads_the_open_orders_through_an_index(tmp_path: Path) -> None:
    """`load_state`'s read of the open orders searches an index: recovery costs the
    open orders, not every order the store ever held (SQLite's plan; PostgreSQL's
    planner may rightly scan a small table, so its plan is not asked)."""
    url = f"sqlite:///{tmp_path / 'plan.db'}"
    upgrade(url)
    (statement,) = [s for s in state_statements() if "orders" in str(s)]

    def plan(connection: Connection) -> list[str]:
        compiled = statement.compile(connection, compile_kwargs={"literal_binds": True})
        rows = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}")
        return [str(row[-1]) for row in rows]

    steps = run_with_connection(url, plan)
    assert any("USING INDEX ix_orders_status_order_id" in step for step in steps), steps
    assert not any(step.startswith("SCAN orders") for step in steps), steps
