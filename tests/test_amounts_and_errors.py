"""Amount parsing and formatting, bounded sums, and the error hierarchy's problem+json form."""
from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from shared import errors
from shared.amounts import AMOUNT_MAX, MINOR_UNITS_PER_MAJOR, checked_sum, format_major, is_amount, parse_major
from shared.errors import (BadRequest, CBDCError, ConfigError, Conflict, Forbidden, NotFound, PayloadTooLarge,
                           TooManyRequests, Unauthorized, Unavailable, Unprocessable, ValidationFailed)

# ---------------------------------------------------------------------------------------------
# parse_major / format_major


def minor_units(text: str) -> int:
    """The expected value, computed with Decimal (independent of the parser under test)."""
    value = Decimal(text.strip()) * MINOR_UNITS_PER_MAJOR
    assert value == value.to_integral_value()
    return int(value)


@pytest.mark.parametrize("text", ["12.34", "0.01", "5", "5.5", "5.50", "0.10", " 7.00 ", "100", "007.5",
                                  "10000000000000", "10000000000000.00", "9999999999999.99"])
def test_parse_major_valid(text):
    assert parse_major(text) == minor_units(text)


def test_parse_major_known_values():
    assert parse_major("12.34") == 1234
    assert parse_major("0.01") == 1
    assert parse_major("5") == 500
    assert parse_major("10000000000000") == AMOUNT_MAX


@pytest.mark.parametrize("text", ["1.234", "-1", "-0.01", "abc", "", " ", "1e3", "+1", "1,00", "1.2.3", ".5",
                                  "1.-1", "1. 5", "0x10", "1_000", "inf", "NaN", "12.3a", "1 000"])
def test_parse_major_invalid(text):
    with pytest.raises(Unprocessable) as info:
        parse_major(text)
    assert info.value.code == "amount_invalid"


@pytest.mark.parametrize("text", ["0", "0.00", "0.0", "10000000000000.01", "10000000000001",
                                  "99999999999999999999999"])
def test_parse_major_out_of_range(text):
    with pytest.raises(Unprocessable) as info:
        parse_major(text)
    assert info.value.code == "amount_out_of_range"


@pytest.mark.parametrize("text", ["²", "1.²", "5²"], ids=["superscript", "superscript-decimal", "trailing"])
def test_parse_major_superscript_digits_raise_unprocessable(text):
    # str.isdigit() is true for "²", but int("²") raises ValueError: must be a 422, not a crash
    assert text.replace(".", "").isdigit()
    with pytest.raises(Unprocessable) as info:
        parse_major(text)
    assert info.value.code in {"amount_invalid", "amount_out_of_range"}


@pytest.mark.parametrize("text", ["１２.３４", "٣", "१०"], ids=["fullwidth", "arabic-indic", "devanagari"])
def test_parse_major_non_ascii_digits_are_refused(text):
    with pytest.raises(Unprocessable) as info:
        parse_major(text)
    assert info.value.code == "amount_invalid"


@pytest.mark.parametrize("minor, text", [(1234, "12.34"), (1, "0.01"), (10, "0.10"), (500, "5.00"), (0, "0.00"),
                                         (-5, "-0.05"), (-1234, "-12.34"), (AMOUNT_MAX, "10000000000000.00")])
def test_format_major(minor, text):
    assert format_major(minor) == text
    assert Decimal(text) * MINOR_UNITS_PER_MAJOR == minor


def test_format_then_parse_round_trip():
    values = [*range(1, 1001), *range(AMOUNT_MAX - 1000, AMOUNT_MAX + 1), 123_456_789, 10**12 + 7]
    for minor in values:
        assert parse_major(format_major(minor)) == minor


# ---------------------------------------------------------------------------------------------
# checked_sum / is_amount


@pytest.mark.parametrize("amounts", [[], [1], [1, 2, 3], [AMOUNT_MAX], [AMOUNT_MAX - 1, 1],
                                     [AMOUNT_MAX // 4] * 4])
def test_checked_sum_within_bounds(amounts):
    assert sum(amounts) <= AMOUNT_MAX
    assert checked_sum(amounts) == sum(amounts)
    assert checked_sum(iter(amounts)) == sum(amounts)


@pytest.mark.parametrize("amounts", [[AMOUNT_MAX, 1], [AMOUNT_MAX // 2 + 1] * 2, [AMOUNT_MAX + 1],
                                     [1] * 3 + [AMOUNT_MAX]])
def test_checked_sum_overflow(amounts):
    assert sum(amounts) > AMOUNT_MAX
    assert checked_sum(amounts) is None


def test_checked_sum_stops_at_the_first_overflow():
    consumed = []

    def amounts():
        for a in (AMOUNT_MAX, 1, 2, 3):
            consumed.append(a)
            yield a
        raise AssertionError("read past the overflow")

    assert checked_sum(amounts()) is None
    assert consumed == [AMOUNT_MAX, 1]


@pytest.mark.parametrize("value", [1, 2, 100, AMOUNT_MAX])
def test_is_amount_true(value):
    assert is_amount(value) is True


class _Int(int):
    pass


@pytest.mark.parametrize("value", [0, -1, AMOUNT_MAX + 1, True, False, 1.0, "1", None, Decimal(1), _Int(5)],
                         ids=["0", "-1", "max+1", "True", "False", "float", "str", "None", "Decimal", "int-subclass"])
def test_is_amount_false(value):
    assert is_amount(value) is False


def test_amount_max_fits_json_and_bigint():
    assert AMOUNT_MAX <= 2**53 - 1 < 2**63 - 1
    assert orjson.loads(orjson.dumps(AMOUNT_MAX)) == AMOUNT_MAX


# ---------------------------------------------------------------------------------------------
# errors

STATUSES = [(CBDCError, 500, "internal_error"), (BadRequest, 400, "malformed_request"),
            (Unauthorized, 401, "unauthenticated"), (Forbidden, 403, "not_permitted"),
            (NotFound, 404, "not_found"), (Conflict, 409, "conflict"), (PayloadTooLarge, 413, "request_too_large"),
            (Unprocessable, 422, "unprocessable"), (ValidationFailed, 422, "unprocessable"),
            (TooManyRequests, 429, "rate_limited"), (Unavailable, 503, "unavailable")]


@pytest.mark.parametrize("cls, status, code", STATUSES, ids=[c.__name__ for c, _, _ in STATUSES])
def test_problem_defaults(cls, status, code):
    err = cls()
    problem = err.to_problem()
    assert problem == {"type": f"urn:cbdc:error:{code}", "title": cls.title, "status": status, "code": code,
                       "detail": cls.title}
    assert isinstance(err, CBDCError) and isinstance(err, Exception)
    assert str(err) == cls.title


@pytest.mark.parametrize("cls, status, code", STATUSES, ids=[c.__name__ for c, _, _ in STATUSES])
def test_problem_with_code_detail_and_index(cls, status, code):
    err = cls("input 3 is spent", code="input_already_spent", index=3)
    problem = err.to_problem("/v1/transactions")
    assert problem == {"type": "urn:cbdc:error:input_already_spent", "title": cls.title, "status": status,
                       "code": "input_already_spent", "detail": "input 3 is spent", "index": 3,
                       "instance": "/v1/transactions"}
    assert cls.code == code  # the class default is not changed by an instance's code
    assert orjson.loads(orjson.dumps(problem)) == problem


def test_index_zero_is_included_and_none_is_not():
    assert Unprocessable("x", code="c", index=0).to_problem()["index"] == 0
    assert "index" not in Unprocessable("x", code="c").to_problem()
    assert "instance" not in Unprocessable("x", code="c").to_problem()


def test_extra_fields_are_merged():
    err = ValidationFailed("bad amount", code="amount_not_positive", index=1, extra={"field": "outputs"})
    problem = err.to_problem()
    assert problem["field"] == "outputs" and problem["index"] == 1 and problem["status"] == 422
    assert problem["type"] == "urn:cbdc:error:amount_not_positive"
    assert problem["title"] == "Transaction rejected"
    assert err.extra == {"field": "outputs"}
    assert Unprocessable().extra == {}


def test_hierarchy():
    assert issubclass(ValidationFailed, Unprocessable)
    assert ValidationFailed.status == 422
    assert not issubclass(ConfigError, CBDCError)
    for cls, _, _ in STATUSES:
        assert issubclass(cls, CBDCError)


def test_repr_names_code_and_index():
    assert repr(Conflict("spent", code="input_already_spent", index=2)) == \
        "Conflict('input_already_spent', index=2: spent)"
    assert repr(NotFound("no such tx", code="transaction_not_found")) == \
        "NotFound('transaction_not_found': no such tx)"


def test_every_error_class_is_listed():
    classes = {obj for obj in vars(errors).values()
               if isinstance(obj, type) and issubclass(obj, CBDCError)}
    assert classes == {cls for cls, _, _ in STATUSES}
