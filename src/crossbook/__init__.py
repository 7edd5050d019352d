"""crossbook: a spot-exchange trade engine.

A price-time priority order book and matching engine, a double-entry ledger that
reserves funds before matching and settles every trade atomically, durable
persistence and a REST + WebSocket API. See the project's DESIGN.md for the layer
map: ``crossbook.domain`` is pure and imports only the standard library.
"""

__version__ = "0.1.0"
