"""Constraint and index names: one convention for every crossbook schema.

A `MetaData(naming_convention=NAMING_CONVENTION)` names every primary key,
index, unique, check and foreign-key constraint from its table and columns, so
the names are the same on SQLite and PostgreSQL and a migration can refer to
one by name (SQLite's batch mode recreates a table and needs them). Changing
the convention renames constraints: it needs a migration of its own.
"""

from __future__ import annotations

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
