"""Errors the SQL store raises besides the database driver's own."""

from __future__ import annotations


class StoreError(RuntimeError):
    """The store cannot do what was asked; the engine must halt and recover."""


class StoreConflictError(StoreError):
    """A batch does not follow the committed state (a gap, a replay, or another writer)."""
