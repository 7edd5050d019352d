"""Assets and market specifications: the grids every amount lives on.

A market trades `base` against `quote`. Prices are integer ticks, quantities
integer lots, balances integer minor units of each asset. A spec fixes the exact
conversion factors between them:

- one lot is `lot_base_units` minor units of the base asset;
- a price of one tick times a quantity of one lot is `notional_units` minor units
  of the quote asset, so `notional = price_ticks * quantity_lots * notional_units`.

Invariants (checked when the spec is built, refused with INVALID_MARKET_SPEC):
- both factors are positive integers (the tick and lot grids are no finer than
  the assets' precision allows);
- the largest order notional (`max_price_ticks * max_quantity_lots *
  notional_units`) fits a signed 64-bit integer, so stores can use BIGINT;
- fee rates are parts per million between 0 and 1,000,000 (no rebates yet).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from crossbook.domain.errors import DomainError, ErrorCode
from crossbook.domain.units import INT64_MAX, Grid, format_scaled, parse_scaled

FEE_RATE_SCALE: Final = 1_000_000  # fee rates are parts per million of the notional
MAX_ASSET_DECIMALS: Final = 18
DEFAULT_MAKER_FEE_RATE: Final = "0.0005"
DEFAULT_TAKER_FEE_RATE: Final = "0.001"

ASSET_CODE_CHARS: Final = 16  # an asset code is 1 to 16 of A-Z, 0-9

_ASSET_CODE: Final = re.compile(rf"[A-Z0-9]{{1,{ASSET_CODE_CHARS}}}")


class MarketStatus(enum.StrEnum):
    ACTIVE = "active"
    HALTED = "halted"


@dataclass(frozen=True, slots=True)
class Asset:
    """An asset with a fixed number of decimals; balances are integer minor units."""

    code: str
    decimals: int

    @classmethod
    def create(cls, code: str, decimals: int) -> Asset:
        if not isinstance(code, str) or _ASSET_CODE.fullmatch(code) is None:
            raise DomainError(
                ErrorCode.INVALID_ASSET, "asset code must be 1-16 of A-Z, 0-9", provided=code
            )
        if not isinstance(decimals, int) or not 0 <= decimals <= MAX_ASSET_DECIMALS:
            raise DomainError(
                ErrorCode.INVALID_ASSET, "asset decimals must be 0-18", provided=decimals
            )
        return cls(code, decimals)

    @property
    def grid(self) -> Grid:
        return Grid(self.decimals, 1)

    def parse_amount(self, text: str, field: str = "amount") -> int:
        return self.grid.parse(text, ErrorCode.INVALID_AMOUNT, field)

    def format_amount(self, minor_units: int) -> str:
        return self.grid.format(minor_units)


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """Immutable trading rules of one market, in integer grid units."""

    symbol: str
    base: Asset
    quote: Asset
    price_grid: Grid
    quantity_grid: Grid
    lot_base_units: int
    notional_units: int
    min_quantity_lots: int
    max_quantity_lots: int
    min_notional_units: int
    max_price_ticks: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    max_fee_ppm: int  # the rate buy orders reserve for: max(maker, taker)

    @classmethod
    def create(
        cls,
        base: Asset,
        quote: Asset,
        *,
        tick_size: str,
        lot_size: str,
        min_quantity: str,
        max_quantity: str,
        min_notional: str = "0",
        max_price: str | None = None,
        maker_fee_rate: str = DEFAULT_MAKER_FEE_RATE,
        taker_fee_rate: str = DEFAULT_TAKER_FEE_RATE,
    ) -> MarketSpec:
        """Validate decimal-string rules and derive the integer conversion factors."""
        bad = ErrorCode.INVALID_MARKET_SPEC
        if base.code == quote.code:
            raise DomainError(bad, "base and quote must differ", base=base.code)
        price_grid = Grid.from_step(tick_size, bad, "tick_size")
        quantity_grid = Grid.from_step(lot_size, bad, "lot_size")
        lot_base_units = _exact_units(quantity_grid, base.decimals, "lot_size")
        notional_units = _exact_units(
            Grid(
                price_grid.decimals + quantity_grid.decimals,
                price_grid.step_units * quantity_grid.step_units,
            ),
            quote.decimals,
            "tick_size * lot_size",
        )
        min_lots = quantity_grid.parse(min_quantity, bad, "min_quantity")
        max_lots = quantity_grid.parse(max_quantity, bad, "max_quantity")
        if not 0 < min_lots <= max_lots:
            raise DomainError(bad, "need 0 < min_quantity <= max_quantity")
        int64_price_ticks = INT64_MAX // (max_lots * notional_units)
        max_price_ticks = (
            int64_price_ticks
            if max_price is None
            else price_grid.parse(max_price, bad, "max_price")
        )
        if not 0 < max_price_ticks <= int64_price_ticks:
            raise DomainError(bad, "max_price * max_quantity must fit a 64-bit notional")
        maker_fee_ppm = _fee_ppm(maker_fee_rate, "maker_fee_rate")
        taker_fee_ppm = _fee_ppm(taker_fee_rate, "taker_fee_rate")
        return cls(
            symbol=f"{base.code}/{quote.code}",
            base=base,
            quote=quote,
            price_grid=price_grid,
            quantity_grid=quantity_grid,
            lot_base_units=lot_base_units,
            notional_units=notional_units,
            min_quantity_lots=min_lots,
            max_quantity_lots=max_lots,
            min_notional_units=quote.parse_amount(min_notional, "min_notional"),
            max_price_ticks=max_price_ticks,
            maker_fee_ppm=maker_fee_ppm,
            taker_fee_ppm=taker_fee_ppm,
            max_fee_ppm=max(maker_fee_ppm, taker_fee_ppm),
        )

    # -- edge conversions (decimal strings <-> integer units) -----------------

    def parse_price(self, text: str, field: str = "price") -> int:
        return self._parse_ticks(text, field, ErrorCode.INVALID_PRICE)

    def parse_stop_price(self, text: str, field: str = "stop_price") -> int:
        return self._parse_ticks(text, field, ErrorCode.INVALID_STOP_PRICE)

    def _parse_ticks(self, text: str, field: str, code: ErrorCode) -> int:
        ticks = self.price_grid.parse(text, code, field)
        if not 0 < ticks <= self.max_price_ticks:
            raise DomainError(code, f"{field} is out of range", field=field, provided=text)
        return ticks

    def parse_quantity(self, text: str, field: str = "quantity") -> int:
        lots = self.quantity_grid.parse(text, ErrorCode.INVALID_QUANTITY, field)
        if lots <= 0:
            raise DomainError(
                ErrorCode.INVALID_QUANTITY,
                f"{field} must be greater than 0",
                field=field,
                provided=text,
            )
        return lots

    def parse_quote_quantity(self, text: str, field: str = "quote_quantity") -> int:
        """A quote budget: a positive amount on the quote asset's grid, at most 2⁶³−1
        minor units; refused INVALID_QUANTITY (it is the order's quantity)."""
        units = self.quote.grid.parse(text, ErrorCode.INVALID_QUANTITY, field)
        if not 0 < units <= INT64_MAX:
            raise DomainError(
                ErrorCode.INVALID_QUANTITY,
                f"{field} must be greater than 0 and at most {self.format_quote(INT64_MAX)}",
                field=field,
                provided=text,
            )
        return units

    def format_price(self, ticks: int) -> str:
        return self.price_grid.format(ticks)

    def format_quantity(self, lots: int) -> str:
        return self.quantity_grid.format(lots)

    def format_quote(self, minor_units: int) -> str:
        return self.quote.format_amount(minor_units)

    def rules(self) -> dict[str, str]:
        """The decimal-string rules that rebuild this spec with `create` (exactly)."""
        return {
            "base": self.base.code,
            "quote": self.quote.code,
            "tick_size": self.price_grid.step_text,
            "lot_size": self.quantity_grid.step_text,
            "min_quantity": self.format_quantity(self.min_quantity_lots),
            "max_quantity": self.format_quantity(self.max_quantity_lots),
            "min_notional": self.format_quote(self.min_notional_units),
            "max_price": self.format_price(self.max_price_ticks),
            "maker_fee_rate": format_scaled(self.maker_fee_ppm, 6),
            "taker_fee_rate": format_scaled(self.taker_fee_ppm, 6),
        }

    # -- integer arithmetic used by matching and the ledger --------------------

    def notional(self, price_ticks: int, quantity_lots: int) -> int:
        """Quote minor units of `quantity_lots` at `price_ticks`."""
        return price_ticks * quantity_lots * self.notional_units

    def base_units(self, quantity_lots: int) -> int:
        """Base minor units of `quantity_lots`."""
        return quantity_lots * self.lot_base_units


def _exact_units(grid: Grid, asset_decimals: int, field: str) -> int:
    """Minor units of `asset_decimals` in one step of `grid`; must be a whole number."""
    exponent = asset_decimals - grid.decimals
    scale: int = 10 ** abs(exponent)
    if exponent >= 0:
        return grid.step_units * scale
    units, remainder = divmod(grid.step_units, scale)
    if remainder or units == 0:
        raise DomainError(
            ErrorCode.INVALID_MARKET_SPEC,
            f"{field} is finer than the asset's precision",
            field=field,
        )
    return units


def _fee_ppm(rate: str, field: str) -> int:
    ppm = parse_scaled(rate, 6, ErrorCode.INVALID_MARKET_SPEC, field)
    if ppm > FEE_RATE_SCALE:
        raise DomainError(
            ErrorCode.INVALID_MARKET_SPEC, f"{field} must be at most 1", field=field, provided=rate
        )
    return ppm
