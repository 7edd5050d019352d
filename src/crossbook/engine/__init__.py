"""The engine: one asyncio task owns the exchange; commands in, committed events out."""
