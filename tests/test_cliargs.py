"""The shared argparse value parsers (``pareco.cliargs``) and one CLI that uses them."""

import argparse

import pytest

from pareco.cliargs import int_at_least, nonnegative_int, positive_float, positive_int
from pareco.train import UsageError, build_parser


@pytest.mark.parametrize("parse, good, bad, message", [
    (positive_int, ("1", "12"), ("0", "-3", "1.5", "x"), "expected a positive integer"),
    (nonnegative_int, ("0", "7"), ("-1", "x"), "expected an integer >= 0"),
    (int_at_least(2), ("2", "24"), ("1", "two"), "expected an integer >= 2"),
    (positive_float, ("0.5", "3"), ("0", "-1", "inf", "nan", "x"), "expected a positive number"),
])
def test_values_are_parsed_or_refused_with_what_is_accepted(parse, good, bad, message):
    assert [parse(t) for t in good] == [type(parse(good[0]))(t) for t in good]
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"{message}, got {text!r}"):
            parse(text)


def test_a_cli_reports_the_parser_message_as_a_usage_error():
    with pytest.raises(UsageError, match="argument --epochs: expected a positive integer, got '0'"):
        build_parser().parse_args(["--epochs", "0"])
