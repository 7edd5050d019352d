"""The legs of a trade: what one fill moves, stated once (DESIGN rule 3).

A fill of `quantity_lots` with notional N (quote minor units,
`price_ticks * quantity_lots * notional_units`) moves B = `quantity_lots *
lot_base_units` base minor units one way and N the other. Fees are charged in
the quote asset: the buyer's fee F_b on top of what it pays, the seller's fee
F_s out of what it receives (each order's fee for the fill comes from its own
cumulative rounding, see `fees`: the maker pays the maker rate, the taker the
taker rate). The five legs:

    buyer pays        N + F_b   quote, out of the buyer's locked funds
    seller delivers   B         base,  out of the seller's locked funds
    buyer receives    B         base,  into the buyer's available funds
    seller receives   N - F_s   quote, into the seller's available funds
    fee account       F_b + F_s quote, into the fee account's available funds

Per asset they sum to zero. Everything that moves a trade's money computes it
here: the exchange's ledger (`Ledger.settle_fill`) and the reservations the
fill consumes, the remote-wallet sweep, the settlement outbox, the stored
journal. The inputs are what `TradeExecuted` records, so the legs of a
committed trade can be rebuilt from its event alone.
"""

from __future__ import annotations

from crossbook.domain.markets import MarketSpec


class TradeLegs:
    """The amounts of one trade's legs, in minor units (a hot-path value: made once per fill).

    Treat as immutable.
    """

    __slots__ = (
        "base_units",
        "buyer_fee_units",
        "buyer_pays_units",
        "fee_units",
        "notional_units",
        "seller_fee_units",
        "seller_receives_units",
    )

    def __init__(
        self, notional_units: int, base_units: int, buyer_fee_units: int, seller_fee_units: int
    ) -> None:
        self.notional_units = notional_units  # quote
        self.base_units = base_units  # base: what the seller delivers and the buyer receives
        self.buyer_fee_units = buyer_fee_units  # quote
        self.seller_fee_units = seller_fee_units  # quote
        self.buyer_pays_units = notional_units + buyer_fee_units  # quote, from locked
        self.seller_receives_units = notional_units - seller_fee_units  # quote
        self.fee_units = buyer_fee_units + seller_fee_units  # quote, to the fee account


def trade_legs(
    spec: MarketSpec,
    quantity_lots: int,
    notional_units: int,
    buyer_fee_units: int,
    seller_fee_units: int,
) -> TradeLegs:
    """The legs of a trade of `quantity_lots` for `notional_units` in market `spec`."""
    return TradeLegs(
        notional_units, quantity_lots * spec.lot_base_units, buyer_fee_units, seller_fee_units
    )
