"""Child process for the crash test: commits batches and prints each committed seq.

Usage: python sql_crash_child.py DATABASE_URL SEED. A line is printed (and
flushed) only after `commit` returned, so every printed seq was acknowledged.
It stops by itself after `MAX_BATCHES` if nobody kills it first.
"""

from __future__ import annotations

import asyncio
import sys

from sql_store_support import Driver

from crossbook.adapters.sql import SqlStore

MAX_BATCHES = 2_000
BATCH_COMMANDS = 20


async def main(url: str, seed: int) -> None:
    driver = Driver(seed)
    driver.setup()
    async with await SqlStore.open(url) as store:
        await store.commit(driver.take_batch())
        print(store.last_seq, flush=True)
        for _ in range(MAX_BATCHES):
            driver.run(BATCH_COMMANDS)
            await store.commit(driver.take_batch())
            print(store.last_seq, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
