"""Replay a neutral command stream on the peer engine, `matching-engine` (``bench peers``).

This file runs in two places:

- as a script, by the Python of the peer's own virtual environment (3.12 or
  later, with `matching-engine` installed and crossbook not), started by
  `crossbook.bench.peers` as a subprocess: it reads a stream file, replays it
  on the peer and prints its figures as one JSON document on stdout;
- imported by crossbook (3.11), for the stream format: `write_stream` and
  `read_stream` are the one definition of it.

So it imports only the standard library at module level; the peer is imported
inside the functions that replay (`load_peer`), through `importlib`, whose
result is `Any` to the type checker (the peer's types are not known here).

The stream format (UTF-8 JSON lines):

- line 1, a header object: ``{"format": "crossbook-peer-stream", "version": 1,
  "workload": ..., "timed_commands": N, ...}``;
- then one JSON array per record, in order. ``["new", ref, user, side, type,
  tif, price_ticks, qty_lots, post_only, stp]`` places an order, ``["cancel",
  ref, user]`` cancels one, ``["segment", label]`` starts a timed segment.
  Records before the first segment are set-up, replayed before any clock runs.
  ``ref`` is the order id crossbook gives the order (1, 2, … in placement
  order), used as the peer's order id, so cancels name the same order in both
  engines. ``side`` is ``buy``/``sell``, ``type`` ``limit``/``market``, ``tif``
  ``gtc``/``ioc``/``fok``, ``stp`` one of `STP_MODES`; prices are integer
  ticks (0 for a market order) and quantities integer lots, as in both engines.

What is timed (`time.perf_counter_ns`), per timed segment:

- in memory: the loop calling ``MatchingEngine.process`` once per pre-built,
  pre-sequenced command, counting the events it returns; after one untimed
  warm-up pass on a fresh engine, which also counts rejections (the streams are
  built so that there are none, and crossbook refuses to report otherwise).
  Garbage collection as in ``crossbook bench engine`` (heap frozen after
  set-up, generation-0 threshold raised), unless ``--gc-gen0-threshold 0``;
- with its write-ahead log: the whole timed stream in group commits of
  ``--wal-batch`` commands (the peer's default, 512), the way its market worker
  commits a full queue: stamp each command (`Sequencer`), append it to the
  `Journal`, one ``sync`` (write + fsync) per batch, then process the batch.
  Snapshots are not taken (its gateway takes one every 100,000 commands). The
  collector is left at its default settings, as ``crossbook bench durable`` does.

Mode ``native-flow`` replays the peer's own benchmark generator
(`matching_engine.workload.order_flow`) instead of a stream file: a reference
for how fast the peer is on its own flow, whose cancels may name orders that
already filled (rejected as unknown).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import importlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

FORMAT = "crossbook-peer-stream"
VERSION = 1
SIDES = ("buy", "sell")
ORDER_TYPES = ("limit", "market")
TIMES_IN_FORCE = ("gtc", "ioc", "fok")
STP_MODES = ("cancel_taker", "cancel_maker", "cancel_both", "none")
PEER_DEFAULT_WAL_BATCH = 512  # the peer gateway's ME_BATCH_MAX default
DEFAULT_GC_GEN0_THRESHOLD = 50_000  # crossbook.bench.engine.GC_GEN0_THRESHOLD

_NEW_FIELDS = 10
_CANCEL_FIELDS = 3


class StreamFormatError(ValueError):
    """A stream file that is not in the format above."""


@dataclass(frozen=True, slots=True)
class NewRecord:
    ref: int
    user: int
    side: str
    order_type: str
    tif: str
    price_ticks: int
    qty_lots: int
    post_only: bool = False
    stp: str = "cancel_taker"


@dataclass(frozen=True, slots=True)
class CancelRecord:
    ref: int
    user: int


Record = NewRecord | CancelRecord


@dataclass(frozen=True, slots=True)
class Segment:
    label: str
    records: list[Record]


@dataclass(frozen=True, slots=True)
class PeerStream:
    header: dict[str, Any]
    setup: list[Record]
    segments: list[Segment]

    @property
    def timed_commands(self) -> int:
        return sum(len(segment.records) for segment in self.segments)


# -- the format ------------------------------------------------------------------------


def encode_record(record: Record) -> list[Any]:
    if isinstance(record, NewRecord):
        return [
            "new",
            record.ref,
            record.user,
            record.side,
            record.order_type,
            record.tif,
            record.price_ticks,
            record.qty_lots,
            int(record.post_only),
            record.stp,
        ]
    return ["cancel", record.ref, record.user]


def write_stream(
    out: TextIO, header: dict[str, Any], setup: Iterable[Record], segments: Iterable[Segment]
) -> None:
    """Write a stream; `header` gets the format, version and timed-command count added."""
    segments = list(segments)
    full_header = {
        **header,
        "format": FORMAT,
        "version": VERSION,
        "timed_commands": sum(len(s.records) for s in segments),
    }
    out.write(json.dumps(full_header) + "\n")
    dumps = json.dumps
    for record in setup:
        out.write(dumps(encode_record(record), separators=(",", ":")) + "\n")
    for segment in segments:
        out.write(dumps(["segment", segment.label]) + "\n")
        for record in segment.records:
            out.write(dumps(encode_record(record), separators=(",", ":")) + "\n")


def read_stream(lines: Iterable[str]) -> PeerStream:
    """Parse a stream; raise `StreamFormatError` (with the line number) on anything else."""
    numbered = enumerate(lines, start=1)
    try:
        _, first = next(numbered)
    except StopIteration:
        raise StreamFormatError("empty stream: no header line") from None
    header = _parse_header(first)
    setup: list[Record] = []
    segments: list[Segment] = []
    current = setup
    for number, line in numbered:
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if isinstance(item, list) and item and item[0] == "segment":
                if len(item) != 2 or not isinstance(item[1], str):
                    raise StreamFormatError('a segment record is ["segment", label]')
                segments.append(Segment(item[1], []))
                current = segments[-1].records
            else:
                current.append(decode_record(item))
        except (StreamFormatError, json.JSONDecodeError) as error:
            raise StreamFormatError(f"line {number}: {error}") from None
    stream = PeerStream(header, setup, segments)
    if stream.timed_commands != header["timed_commands"]:
        raise StreamFormatError(
            f"the header announces {header['timed_commands']} timed commands, "
            f"the stream holds {stream.timed_commands}"
        )
    return stream


def _parse_header(line: str) -> dict[str, Any]:
    try:
        header = json.loads(line)
    except json.JSONDecodeError as error:
        raise StreamFormatError(f"line 1: the header is not JSON: {error}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise StreamFormatError(f"line 1: not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise StreamFormatError(f"line 1: version {header.get('version')!r}, expected {VERSION}")
    if not _is_int(header.get("timed_commands")):
        raise StreamFormatError("line 1: the header has no timed_commands count")
    return header


def decode_record(item: Any) -> Record:
    if not isinstance(item, list) or not item:
        raise StreamFormatError(f"a record is a non-empty array, got {item!r}")
    op = item[0]
    if op == "new":
        if len(item) != _NEW_FIELDS:
            raise StreamFormatError(f"a new record has {_NEW_FIELDS} fields, got {len(item)}")
        _, ref, user, side, order_type, tif, price, qty, post_only, stp = item
        _check_ints(ref=ref, user=user, price_ticks=price, qty_lots=qty)
        _check_choice("side", side, SIDES)
        _check_choice("type", order_type, ORDER_TYPES)
        _check_choice("tif", tif, TIMES_IN_FORCE)
        _check_choice("stp", stp, STP_MODES)
        if post_only not in (0, 1) or isinstance(post_only, float):
            raise StreamFormatError(f"post_only is 0 or 1, got {post_only!r}")
        return NewRecord(ref, user, side, order_type, tif, price, qty, bool(post_only), stp)
    if op == "cancel":
        if len(item) != _CANCEL_FIELDS:
            raise StreamFormatError(f"a cancel record has {_CANCEL_FIELDS} fields, got {len(item)}")
        _, ref, user = item
        _check_ints(ref=ref, user=user)
        return CancelRecord(ref, user)
    raise StreamFormatError(f"unknown record {op!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ints(**values: Any) -> None:
    for name, value in values.items():
        if not _is_int(value) or value < 0:
            raise StreamFormatError(f"{name} is a non-negative integer, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise StreamFormatError(f"{name} is one of {', '.join(choices)}, got {value!r}")


def book_digest(orders: Iterable[tuple[str, int, int, int]]) -> str:
    """A fingerprint of a book: its resting orders as (side, price_ticks, ref, remaining_lots),
    bids then asks, each best price first and in time priority within a price. Both
    engines' final books must give the same one."""
    digest = hashlib.sha256()
    for side, price_ticks, ref, remaining_lots in orders:
        digest.update(f"{side} {price_ticks} {ref} {remaining_lots}\n".encode())
    return digest.hexdigest()


# -- the peer ----------------------------------------------------------------------------


def load_peer() -> SimpleNamespace:
    """The peer's modules (ImportError where it is not installed: crossbook's own Python)."""
    names = ("domain", "engine", "events", "journal", "sequencer", "workload")
    modules = {name: importlib.import_module(f"matching_engine.{name}") for name in names}
    return SimpleNamespace(
        version=importlib.import_module("matching_engine").__version__, **modules
    )


def to_peer_command(peer: SimpleNamespace, record: Record) -> Any:
    domain = peer.domain
    if isinstance(record, CancelRecord):
        return domain.CancelOrder(record.ref, record.user)
    return domain.NewOrder(
        record.ref,
        record.user,
        domain.Side(record.side),
        record.price_ticks,
        record.qty_lots,
        domain.OrderType(record.order_type),
        domain.TimeInForce(record.tif),
        record.post_only,
        domain.SelfTradePrevention(record.stp),
    )


@contextmanager
def _collector(gen0_threshold: int) -> Iterator[None]:
    """`crossbook bench engine`'s "tuned" policy; 0 leaves the collector alone."""
    if not gen0_threshold:
        yield
        return
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def replay_in_memory(
    peer: SimpleNamespace, setup: list[Any], segments: list[tuple[str, list[Any]]], gen0: int
) -> dict[str, Any]:
    """One untimed checking pass, then one timed pass, each on a fresh engine."""
    rejected = _checking_pass(peer, setup, segments)
    engine = peer.engine.MatchingEngine()
    process = engine.process
    sequenced = _sequence(peer, setup, segments)
    for command in sequenced[0]:
        process(command)
    parts: dict[str, dict[str, int]] = {}
    with _collector(gen0):
        for (label, _), commands in zip(segments, sequenced[1:], strict=True):
            trades_before = engine.next_trade_id
            events = 0
            # -- timed: only the calls into the engine -------------------------------
            started = time.perf_counter_ns()
            for command in commands:
                events += len(process(command))
            elapsed = time.perf_counter_ns() - started
            # ------------------------------------------------------------------------
            part = parts.setdefault(label, {"ns": 0, "commands": 0, "trades": 0, "events": 0})
            part["ns"] += elapsed
            part["commands"] += len(commands)
            part["trades"] += engine.next_trade_id - trades_before
            part["events"] += events
    resting = len(engine.book)
    digest = book_digest((o.side.value, o.price, o.order_id, o.qty) for o in engine.book.entries())
    del engine, process, sequenced
    gc.collect()
    return {"parts": parts, "rejected": rejected, "resting_orders": resting, "book_digest": digest}


def _sequence(
    peer: SimpleNamespace, setup: list[Any], segments: list[tuple[str, list[Any]]]
) -> list[list[Any]]:
    """Set-up and each segment as `SequencedCommand`s, seq 1, 2, … (ts 0: the engine only
    copies it into events)."""
    sequenced_command = peer.domain.SequencedCommand
    seq = 0
    out: list[list[Any]] = []
    for commands in [setup, *(commands for _, commands in segments)]:
        out.append([sequenced_command(seq + i, 0, c) for i, c in enumerate(commands, start=1)])
        seq += len(commands)
    return out


def _checking_pass(
    peer: SimpleNamespace, setup: list[Any], segments: list[tuple[str, list[Any]]]
) -> int:
    """Warm-up: replay everything once, untimed, counting rejected commands."""
    rejected_type = peer.events.OrderRejected
    engine = peer.engine.MatchingEngine()
    rejected = 0
    for commands in _sequence(peer, setup, segments):
        for command in commands:
            rejected += any(type(e) is rejected_type for e in engine.process(command))
    return rejected


def replay_with_wal(
    peer: SimpleNamespace,
    setup: list[Any],
    segments: list[tuple[str, list[Any]]],
    directory: Path,
    batch_max: int,
) -> dict[str, Any]:
    """The whole timed stream through stamp → append → fsync per batch → process."""
    journal = peer.journal.Journal(directory, fsync=True)
    engine, report = journal.recover()
    sequencer = peer.sequencer.Sequencer(report.last_seq + 1, report.last_ts)
    journal.open(sequencer.next_seq)
    try:
        _commit_in_batches(journal, sequencer, engine, setup, batch_max)
        timed = [command for _, commands in segments for command in commands]
        trades_before = engine.next_trade_id
        # -- timed: group commits and the engine -------------------------------------
        started = time.perf_counter_ns()
        events = _commit_in_batches(journal, sequencer, engine, timed, batch_max)
        elapsed = time.perf_counter_ns() - started
        # ------------------------------------------------------------------------------
    finally:
        journal.close()
    wal_bytes = sum(p.stat().st_size for p in (directory / "wal").glob("*.wal"))
    return {
        "ns": elapsed,
        "commands": len(timed),
        "trades": engine.next_trade_id - trades_before,
        "events": events,
        "batches": -(-len(timed) // batch_max),
        "batch_max": batch_max,
        "fsync": True,
        "wal_bytes": wal_bytes,
        "resting_orders": len(engine.book),
    }


def _commit_in_batches(
    journal: Any, sequencer: Any, engine: Any, commands: list[Any], batch_max: int
) -> int:
    stamp, append, sync, process = sequencer.stamp, journal.append, journal.sync, engine.process
    events = 0
    for start in range(0, len(commands), batch_max):
        stamped = [stamp(command) for command in commands[start : start + batch_max]]
        for sequenced in stamped:
            append(sequenced)
        sync()  # one write and one fsync for the batch
        for sequenced in stamped:
            events += len(process(sequenced))
    return events


# -- the script ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="peer_driver", description="Replay a command stream on matching-engine."
    )
    modes = parser.add_subparsers(dest="mode", required=True)
    replay = modes.add_parser("replay", help="replay a stream file written by crossbook")
    replay.add_argument("stream", type=Path)
    native = modes.add_parser("native-flow", help="replay the peer's own order_flow generator")
    native.add_argument("--commands", type=int, required=True)
    native.add_argument("--seed", type=int, required=True)
    native.add_argument("--accounts", type=int, default=1_000)
    for mode in (replay, native):
        mode.add_argument("--no-wal", action="store_true", help="in memory only")
        mode.add_argument("--wal-batch", type=int, default=PEER_DEFAULT_WAL_BATCH)
        mode.add_argument("--wal-dir", type=Path, default=None, help="parent of the temp WAL")
        mode.add_argument("--gc-gen0-threshold", type=int, default=DEFAULT_GC_GEN0_THRESHOLD)
    return parser


def _commands_of(
    peer: SimpleNamespace, args: argparse.Namespace
) -> tuple[dict[str, Any], list[Any], list[tuple[str, list[Any]]]]:
    if args.mode == "native-flow":
        flow = list(peer.workload.order_flow(args.seed, args.commands, accounts=args.accounts))
        header = {"workload": "peer-native-flow", "seed": args.seed, "timed_commands": len(flow)}
        return header, [], [("stream", flow)]
    with args.stream.open(encoding="utf-8") as lines:
        stream = read_stream(lines)
    setup = [to_peer_command(peer, r) for r in stream.setup]
    segments = [(s.label, [to_peer_command(peer, r) for r in s.records]) for s in stream.segments]
    return stream.header, setup, segments


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    peer = load_peer()
    header, setup, segments = _commands_of(peer, args)
    report: dict[str, Any] = {
        "peer": {"package": "matching-engine", "version": peer.version},
        "python": platform.python_version(),
        "workload": header.get("workload"),
        "seed": header.get("seed"),
        "setup_commands": len(setup),
        "gc_gen0_threshold": args.gc_gen0_threshold,
        "memory": replay_in_memory(peer, setup, segments, args.gc_gen0_threshold),
    }
    if not args.no_wal:
        with tempfile.TemporaryDirectory(prefix="peer-wal-", dir=args.wal_dir) as folder:
            report["wal"] = replay_with_wal(peer, setup, segments, Path(folder), args.wal_batch)
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
