"""crossbook: a spot-exchange trade engine.

A price-time priority order book and matching engine, a double-entry ledger that
reserves funds before matching and settles every trade atomically, durable
persistence and a REST + WebSocket API. See the project's DESIGN.md for the layer
map: ``crossbook.domain`` is pure and imports only the standard library.

This module stays pure Python: before any module of the domain is imported it
installs the finder that picks the domain's build, compiled (mypyc) or source,
and never runs a compiled module older than its source (see `crossbook._compiled`).
"""

from crossbook import _compiled

__version__ = "0.1.0"

_compiled.install()
