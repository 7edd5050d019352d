"""The read model: what every gateway reads, fed only by committed events.

Who feeds whom: the engine's committed-event relay hands each committed batch to
`market_data.MarketData` (`apply`), which applies it and then tells its
listeners (the WebSocket hub) what changed; REST reads, the streams and the
wallet's market-buy costing all read the same `MarketData`. It is built from a
committed snapshot (`from_snapshot`), so a process without the engine can hold
one.

Modules, one concept each: `market_data` (the facade: markets, assets, applying
batches, reads), `books` (aggregated levels, snapshots, diffs), `candles`
(candle widths, the tickers' minute bars), `records` (the committed store's
rows as reads return them).
"""
