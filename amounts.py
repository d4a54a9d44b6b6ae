"""Arrears amounts, in one place: reading a case's Arrease, summing a cell's Tot_Arrease exactly, storing a
total in BSON, and comparing a stored total with the cases' sum (the audit).

A batch's amounts are summed by one rule (AmountKind): integers exactly, decimals (Decimal128) exactly in
the 34 digits a Decimal128 holds, and any batch holding a float as floats rounded to cents. A sum that
cannot be held exactly is refused, never rounded.
"""

import decimal
import enum
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from bson.decimal128 import Decimal128

from utils.Custom_Exceptions import FullReadNeeded, TaskValidationError
from utils.documents import INT64_MAX

Amount = int | float | Decimal
HALF_A_CENT = 0.005  # float totals are rounded to cents by the job

# Decimal128 holds 34 significant digits; a sum that needs more is refused, never rounded.
_DECIMAL128_EXACT = decimal.Context(prec=34, Emin=-6143, Emax=6144,
                                    traps=[decimal.Inexact, decimal.Overflow, decimal.InvalidOperation])


class AmountKind(enum.StrEnum):
    """How a batch's Arrease amounts are summed: exactly as integers or decimals, or as floats."""
    INTEGER = "integer"
    DECIMAL = "decimal"
    FLOAT = "float"


def kind_of(has_float: bool, has_decimal: bool) -> AmountKind:
    """The batch's rule: floats as soon as one amount is a float, else decimals as soon as one is a decimal."""
    return AmountKind.FLOAT if has_float else AmountKind.DECIMAL if has_decimal else AmountKind.INTEGER


def kind_of_amounts(amounts: Iterable[Amount]) -> AmountKind:
    amounts = list(amounts)
    return kind_of(any(isinstance(a, float) for a in amounts), any(isinstance(a, Decimal) for a in amounts))


def read_arrears(value: object, where: str) -> Amount:
    """A case's Arrease as planning sums it: int (Int64 included), float, or decimal.Decimal (from a
    Decimal128); absent counts 0. TaskValidationError naming `where` for anything else."""
    if value is None:
        return 0
    if isinstance(value, Decimal128):
        amount = value.to_decimal()
        if not amount.is_finite():
            raise TaskValidationError(f"{where}: Arrease must be a number, got {value!r} (Decimal128)")
        return amount
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TaskValidationError(f"{where}: Arrease must be a number, got {value!r} ({type(value).__name__})")
    return int(value) if isinstance(value, int) else value


def cell_total(amounts: Sequence[Any], kind: AmountKind, where: str) -> Any:
    """Tot_Arrease of one cell: an exact integer, an exact decimal, or a float sum rounded to cents."""
    if kind is AmountKind.INTEGER:
        return sum(amounts)
    if kind is AmountKind.DECIMAL:
        try:
            with decimal.localcontext(_DECIMAL128_EXACT):
                return sum(amounts, decimal.Decimal(0))
        except decimal.DecimalException:
            raise TaskValidationError(f"{where}: Tot_Arrease cannot be summed exactly in the 34 digits of a "
                                      "Decimal128") from None
    try:
        # + 0.0: a total of zero is 0.0, whatever the signs of the zeros summed (fsum of -0.0 alone is -0.0).
        return round(math.fsum(float(amount) for amount in amounts), 2) + 0.0
    except OverflowError:
        raise TaskValidationError(f"{where}: Tot_Arrease exceeds the largest float") from None


# A float total is vouched for while the amounts' distance from their cents, and the rounding of their sum,
# stay this far below half a cent: rounding to cents then gives the cents' own sum.
_CENTS_MARGIN = 0.004
# Cents summed as doubles (a server's $sum) stay exact integers below 2**53.
_EXACT_DOUBLE_INTEGERS = 2**53


def cents_of(amount: Amount) -> int:
    """An amount in cents, exactly (an amount that is no whole number of cents is refused by CellSum)."""
    return round(Fraction(amount) * 100)


@dataclass(frozen=True)
class CellSum:
    """A cell's amounts known by their number and exact sum only, as a server's $group gives them (the
    push-down read), not one by one.

    `units`: the exact sum, of the integers (AmountKind.INTEGER), or of the amounts in cents
    (AmountKind.FLOAT, every amount being the double nearest a whole number of cents); `largest`: the
    largest magnitude of an amount, which bounds how far the doubles lie from their cents.
    """
    count: int
    units: int
    largest: float

    def moved(self, leaving: Sequence[Amount], arriving: Sequence[Amount], kind: AmountKind) -> "CellSum":
        """The cell after cases left and arrived, their amounts known one by one."""
        units_of = int if kind is AmountKind.INTEGER else cents_of
        largest = max([self.largest, *(abs(float(amount)) for amount in arriving)])
        return CellSum(self.count - len(leaving) + len(arriving),
                       self.units - sum(map(units_of, leaving)) + sum(map(units_of, arriving)), largest)

    def total(self, kind: AmountKind) -> int | float:
        """What cell_total gives for the cell's amounts, or FullReadNeeded when that cannot be vouched for."""
        if kind is AmountKind.INTEGER:
            return self.units
        if kind is not AmountKind.FLOAT:
            raise FullReadNeeded("decimal amounts are summed exactly only one by one")
        # fsum returns the double nearest the exact sum, which lies within count half-ulps of the cents' sum.
        drift = self.count * math.ulp(self.largest) / 2
        if abs(self.units) >= _EXACT_DOUBLE_INTEGERS or \
                drift + math.ulp(abs(self.units) / 100 + drift + 1) >= _CENTS_MARGIN:
            raise FullReadNeeded("the amounts are too large to round their sum to cents from the server's figures")
        return float(Fraction(self.units, 100))


def amounts_total(amounts: "Sequence[Any] | CellSum", kind: AmountKind, where: str) -> tuple[int, Any]:
    """(number of amounts, Tot_Arrease) of a cell's amounts, listed or summed (CellSum)."""
    if isinstance(amounts, CellSum):
        return amounts.count, amounts.total(kind)
    return len(amounts), cell_total(amounts, kind, where)


def without(amounts: Iterable[Any], removed: Iterable[Any]) -> list[Any]:
    """`amounts` less one occurrence of each value in `removed` (equal amounts are interchangeable)."""
    left = Counter(amounts)
    left.subtract(removed)
    return list(left.elements())


def stored_amount(total: object) -> object:
    """A Tot_Arrease as BSON stores it: a decimal as Decimal128, an integer beyond Int64 as Decimal128."""
    if isinstance(total, Decimal):
        return Decimal128(total)
    if isinstance(total, int) and not -INT64_MAX - 1 <= total <= INT64_MAX:
        return Decimal128(Decimal(total))
    return total


def from_stored(value: Any) -> Any:
    """A stored amount as Python compares it: a Decimal128 as a Decimal, anything else as it is."""
    return value.to_decimal() if isinstance(value, Decimal128) else value


def is_amount(value: Any) -> bool:
    """A Tot_Arrease the job could have written: an integer, a finite float or a finite decimal."""
    value = from_stored(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)


def same_amount(stored: Any, computed: Any) -> bool:
    """Whether a stored Tot_Arrease equals the total of the cases: exactly for integers and decimals,
    within half a cent when either is a float."""
    stored, computed = from_stored(stored), from_stored(computed)
    if not is_amount(stored):
        return False
    if isinstance(stored, float) or isinstance(computed, float):
        return math.isclose(float(stored), float(computed), rel_tol=0, abs_tol=HALF_A_CENT)
    return bool(stored == computed)
