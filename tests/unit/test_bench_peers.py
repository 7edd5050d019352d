"""`crossbook bench peers`: the neutral stream form, the driver's parsing, the peer-flow
generator and the clean skip. No engine is timed here (DESIGN §4), and the peer itself
is not needed: the driver module imports it only inside the functions that replay."""

from __future__ import annotations

import ast
import io
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from crossbook.bench import peer_driver, peers, streams
from crossbook.bench.peer_driver import CancelRecord, NewRecord, StreamFormatError
from crossbook.bench.streams import Segment, Stream
from crossbook.cli import app
from crossbook.domain import (
    CancelOrder,
    Command,
    CreateAsset,
    Deposit,
    Exchange,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
)

SYMBOL = streams.SYMBOL


def _stream(setup: list[Command], timed: list[Command], orders: int) -> Stream:
    return Stream("hand-made", setup, [Segment("stream", timed)], orders, 0)


def _round_trip(stream: Stream, tmp_path: Path) -> peer_driver.PeerStream:
    path = tmp_path / "stream.jsonl"
    peers.write_neutral(path, "hand-made", 7, stream)
    with path.open(encoding="utf-8") as lines:
        return peer_driver.read_stream(lines)


def test_each_command_keeps_its_meaning_in_the_neutral_form(tmp_path: Path) -> None:
    setup = [
        CreateAsset("BTC", 8),
        Deposit(1, "BTC", 10**9),
        PlaceOrder(1, SYMBOL, Side.SELL, OrderType.LIMIT, quantity_lots=5, price_ticks=3_000_010),
    ]
    timed = [
        PlaceOrder(2, SYMBOL, Side.BUY, OrderType.LIMIT, quantity_lots=7, price_ticks=2_999_990),
        PlaceOrder(
            3, SYMBOL, Side.BUY, OrderType.LIMIT, quantity_lots=9, price_ticks=3_000_020,
            time_in_force=TimeInForce.IOC, stp_mode=StpMode.CANCEL_MAKER,
        ),
        PlaceOrder(
            4, SYMBOL, Side.SELL, OrderType.LIMIT, quantity_lots=1, price_ticks=3_000_050,
            post_only=True,
        ),
        PlaceOrder(2, SYMBOL, Side.SELL, OrderType.MARKET, quantity_lots=3),
        PlaceOrder(
            5, SYMBOL, Side.BUY, OrderType.MARKET, quantity_lots=4, time_in_force=TimeInForce.FOK
        ),
        CancelOrder(2, order_id=2),
    ]  # fmt: skip
    stream = _round_trip(_stream(setup, timed, orders=6), tmp_path)

    assert stream.header["workload"] == "hand-made"
    assert stream.header["seed"] == 7
    assert stream.header["setup_skipped"] == 2  # the asset and the deposit: nothing like them
    assert stream.setup == [NewRecord(1, 1, "sell", "limit", "gtc", 3_000_010, 5)]
    assert [s.label for s in stream.segments] == ["stream"]
    assert stream.segments[0].records == [
        NewRecord(2, 2, "buy", "limit", "gtc", 2_999_990, 7),
        NewRecord(3, 3, "buy", "limit", "ioc", 3_000_020, 9, stp="cancel_maker"),
        NewRecord(4, 4, "sell", "limit", "gtc", 3_000_050, 1, post_only=True),
        NewRecord(5, 2, "sell", "market", "ioc", 0, 3),  # a market order is IOC, price 0
        NewRecord(6, 5, "buy", "market", "fok", 0, 4),
        CancelRecord(2, 2),
    ]


@pytest.mark.parametrize("scenario", ["mixed", "sweep"])
def test_a_generated_stream_round_trips_with_the_ids_crossbook_predicts(
    scenario: str, tmp_path: Path
) -> None:
    stream = streams.build(scenario, 600, seed=3)
    neutral = peers.to_neutral(stream)
    parsed = _round_trip(stream, tmp_path)

    assert parsed.setup == neutral.setup
    assert [(s.label, s.records) for s in parsed.segments] == [
        (s.label, s.records) for s in neutral.segments
    ]
    assert parsed.timed_commands == stream.command_count
    records = parsed.setup + [r for s in parsed.segments for r in s.records]
    refs = [r.ref for r in records if isinstance(r, NewRecord)]
    assert refs == list(range(1, stream.expected_orders + 1))
    placed_by = {r.ref: r.user for r in records if isinstance(r, NewRecord)}
    for position, record in enumerate(records):
        if isinstance(record, CancelRecord):  # a cancel names an earlier order of its user
            assert placed_by[record.ref] == record.user
            assert refs.index(record.ref) < position


def test_commands_the_peer_has_no_counterpart_for_are_refused() -> None:
    refused = [
        PlaceOrder(1, SYMBOL, Side.BUY, OrderType.MARKET, quote_budget_units=10**6),
        PlaceOrder(
            1, SYMBOL, Side.BUY, OrderType.STOP_LIMIT, quantity_lots=1, price_ticks=10,
            stop_price_ticks=11,
        ),
        PlaceOrder(
            1, SYMBOL, Side.BUY, OrderType.LIMIT, quantity_lots=1, price_ticks=10,
            time_in_force=TimeInForce.GTD, expire_at_ms=1_000,
        ),
        CancelOrder(1, client_order_id="abc"),
    ]  # fmt: skip
    for command in refused:
        with pytest.raises(ValueError, match="no counterpart"):
            peers.to_neutral(_stream([], [command], orders=1))


def _lines(*records: list[Any], timed: int | None = None) -> list[str]:
    count = sum(r[0] != "segment" for r in records) if timed is None else timed
    header = {"format": peer_driver.FORMAT, "version": peer_driver.VERSION, "timed_commands": count}
    return [json.dumps(header), *(json.dumps(r) for r in records)]


def test_the_driver_reads_set_up_then_labelled_segments() -> None:
    stream = peer_driver.read_stream(
        _lines(
            ["new", 1, 9, "buy", "limit", "gtc", 100, 2, 0, "none"],
            ["segment", "build"],
            ["new", 2, 8, "sell", "limit", "fok", 100, 1, 0, "cancel_both"],
            ["segment", "sweep"],
            ["cancel", 1, 9],
            timed=2,
        )
    )
    assert stream.setup == [NewRecord(1, 9, "buy", "limit", "gtc", 100, 2, stp="none")]
    assert [(s.label, s.records) for s in stream.segments] == [
        ("build", [NewRecord(2, 8, "sell", "limit", "fok", 100, 1, stp="cancel_both")]),
        ("sweep", [CancelRecord(1, 9)]),
    ]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([], "no header"),
        (['{"format": "something-else", "version": 1, "timed_commands": 0}'], "not a"),
        ([*_lines()[:1], "not json"], "line 2"),
        (_lines(["amend", 1, 2]), "unknown record"),
        (_lines(["cancel", 1]), "3 fields"),
        (_lines(["new", 1, 2, "buy", "limit", "gtc", 100, 1, 0]), "10 fields"),
        (_lines(["new", 1, 2, "BUY", "limit", "gtc", 100, 1, 0, "none"]), "side"),
        (_lines(["new", 1, 2, "buy", "stop", "gtc", 100, 1, 0, "none"]), "type"),
        (_lines(["new", 1, 2, "buy", "limit", "gtd", 100, 1, 0, "none"]), "tif"),
        (_lines(["new", 1, 2, "buy", "limit", "gtc", 100, 1, 0, "decrement"]), "stp"),
        (_lines(["new", 1, 2, "buy", "limit", "gtc", 1.5, 1, 0, "none"]), "price_ticks"),
        (_lines(["new", 1, 2, "buy", "limit", "gtc", 100, -1, 0, "none"]), "qty_lots"),
        (_lines(["new", 1, 2, "buy", "limit", "gtc", 100, 1, 2, "none"]), "post_only"),
        (_lines(["segment"]), "segment record"),
        (_lines(["segment", "a"], ["cancel", 1, 2], timed=5), "announces 5"),
    ],
)
def test_the_driver_refuses_a_malformed_stream(lines: list[str], message: str) -> None:
    with pytest.raises(StreamFormatError, match=message):
        peer_driver.read_stream(lines)


def test_the_driver_writes_what_it_reads() -> None:
    setup = [NewRecord(1, 1, "sell", "limit", "gtc", 7, 3)]
    segments = [peer_driver.Segment("stream", [CancelRecord(1, 1)])]
    out = io.StringIO()
    peer_driver.write_stream(out, {"workload": "w"}, setup, segments)
    parsed = peer_driver.read_stream(out.getvalue().splitlines())
    assert (parsed.setup, parsed.segments) == (setup, segments)
    assert parsed.header["timed_commands"] == 1


def test_the_driver_parses_its_modes() -> None:
    parser = peer_driver.build_parser()
    replay = parser.parse_args(["replay", "s.jsonl", "--no-wal", "--gc-gen0-threshold", "0"])
    assert (replay.mode, replay.stream, replay.no_wal, replay.gc_gen0_threshold) == (
        "replay", Path("s.jsonl"), True, 0,
    )  # fmt: skip
    assert replay.wal_batch == peer_driver.PEER_DEFAULT_WAL_BATCH == 512
    native = parser.parse_args(["native-flow", "--commands", "10", "--seed", "4"])
    assert (native.mode, native.commands, native.seed, native.accounts) == (
        "native-flow",
        10,
        4,
        1_000,
    )
    with pytest.raises(SystemExit):
        parser.parse_args(["native-flow", "--commands", "10"])  # --seed is required


def test_the_driver_imports_only_the_standard_library_at_module_level() -> None:
    """It runs under the peer's Python, where crossbook is not installed."""
    tree = ast.parse(Path(peer_driver.__file__).read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.partition(".")[0]
            assert top == "__future__" or top in sys.stdlib_module_names, name
    with pytest.raises(ImportError):
        peer_driver.load_peer()  # not installed beside crossbook


def test_the_peer_flow_has_the_peers_mix_and_every_command_is_accepted() -> None:
    stream = peers.build_peer_flow(4_000, seed=5)
    (segment,) = stream.segments
    kinds = Counter(
        "cancel" if isinstance(c, CancelOrder) else c.order_type.value  # type: ignore[union-attr]
        for c in segment.commands
    )
    assert kinds.keys() == {"cancel", "market", "limit"}
    assert 0.22 < kinds["cancel"] / 4_000 < 0.28
    assert 0.03 < kinds["market"] / 4_000 < 0.07
    limits = [c for c in segment.commands if isinstance(c, PlaceOrder) and c.price_ticks]
    mid = streams.MID_PRICE_TICKS
    offsets = {
        (mid - c.price_ticks) if c.side is Side.BUY else (c.price_ticks - mid) for c in limits
    }
    assert min(offsets) == -peers.PEER_FLOW_CROSS_TICKS
    assert max(offsets) == peers.PEER_FLOW_DEPTH_TICKS
    users = {c.user_id for c in segment.commands}
    assert users <= set(range(1, peers.PEER_FLOW_ACCOUNTS + 1)) and len(users) > 900

    exchange = Exchange()  # raises DomainError on any rejection
    for command in stream.setup:
        exchange.execute(command)
    before = exchange.next_trade_id
    for command in segment.commands:
        exchange.execute(command)
    assert exchange.next_trade_id - before == stream.expected_trades > 0
    assert exchange.next_order_id - 1 == stream.expected_orders


@pytest.mark.parametrize("as_json", [False, True])
def test_without_a_python_for_the_peer_the_benchmark_skips_cleanly(as_json: bool) -> None:
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(
            app,
            ["bench", "peers", "--peer-python", "/nonexistent/python3.12", "--commands", "10",
             *(["--json"] if as_json else [])],
        )  # fmt: skip
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 0, result.output
    if as_json:
        assert "no Python >= 3.12" in json.loads(result.stdout)["skipped"]
    else:
        assert "skipped" in result.output


def test_the_final_book_digest_is_crossbooks_book_in_priority_order() -> None:
    setup = streams.build("add-only", 1, seed=0).setup  # assets, the market, funded users
    ask, bid = 3_000_010, 2_999_990
    timed: list[Command] = [
        PlaceOrder(1, SYMBOL, Side.SELL, OrderType.LIMIT, quantity_lots=5, price_ticks=ask),
        PlaceOrder(2, SYMBOL, Side.SELL, OrderType.LIMIT, quantity_lots=3, price_ticks=ask),
        PlaceOrder(3, SYMBOL, Side.BUY, OrderType.LIMIT, quantity_lots=2, price_ticks=bid),
        PlaceOrder(4, SYMBOL, Side.BUY, OrderType.MARKET, quantity_lots=1),
    ]
    digest = peers.final_book_digest(_stream(setup, timed, orders=4))
    expected = [("buy", bid, 3, 2), ("sell", ask, 1, 4), ("sell", ask, 2, 3)]
    assert digest == peer_driver.book_digest(expected)
    assert digest != peer_driver.book_digest([expected[0], expected[2], expected[1]])
