"""The read model: what every gateway reads, fed only by committed events.

`records` are the committed store's rows as reads return them; `market_data`
the in-memory books, tickers and candles window of every market.
"""
