"""Normalization of date-times and status values (backfill.normalize), one rule per table."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from backfill.normalize import format_utc, normalize_status, parse_datetimes


def parse_one(text: str | None, **options) -> tuple[str | None, str | None]:
    """(UTC text or None, reason or None) for one value."""
    times, why = parse_datetimes(pd.Series([text], dtype=object), **options)
    out = format_utc(times).iloc[0]
    reason = why.iloc[0]
    return (None if pd.isna(out) else out), (None if pd.isna(reason) else reason)


def utc_texts(times: pd.Series) -> list[str | None]:
    """format_utc of a column as a list, missing as None."""
    return [None if pd.isna(v) else v for v in format_utc(times)]


def epoch_utc(seconds: int) -> str:
    """The expected text computed by the standard library, independently of pandas."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- ISO 8601 with a zone, and naive date-times ----------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-04-10T06:51:47Z", "2023-04-10T06:51:47Z"),
        ("2023-04-10T06:51:47+02:00", "2023-04-10T04:51:47Z"),  # +HH:MM: 2 hours ahead of UTC
        ("2023-04-10T06:51:47+0200", "2023-04-10T04:51:47Z"),  # +HHMM
        ("2023-04-10T06:51:47-05:00", "2023-04-10T11:51:47Z"),
        ("2023-04-10 06:51:47 +02:00", "2023-04-10T04:51:47Z"),  # a space before the offset
        ("2023-04-10 06:51:47+02:00", "2023-04-10T04:51:47Z"),  # space instead of T
        ("2023-04-10T06:51:47.123456Z", "2023-04-10T06:51:47Z"),  # fractional seconds cut, not rounded
        ("2023-04-10T06:51:47.999+01:00", "2023-04-10T05:51:47Z"),
        ("2023-04-10T06:51:47z", "2023-04-10T06:51:47Z"),  # RFC 3339 allows a lower-case z
        ("2023-12-31T23:30:00-01:00", "2024-01-01T00:30:00Z"),  # across a year boundary
    ],
)
def test_iso_with_zone_is_converted_to_utc(text, expected):
    # the mapping's zone never applies to a time that carries its own offset
    assert parse_one(text, timezone="Europe/Berlin") == (expected, None)


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2023-04-10 06:51:47", "UTC", "2023-04-10T06:51:47Z"),
        ("2023-4-10 6:51:47", "UTC", "2023-04-10T06:51:47Z"),  # unpadded month, day and hour
        ("2023-4-10 6:51:47", "Europe/Berlin", "2023-04-10T04:51:47Z"),  # CEST is UTC+2
        ("2023-01-10 06:51", "Europe/Berlin", "2023-01-10T05:51:00Z"),  # CET is UTC+1, no seconds
        ("2023-01-10T06:51:47.5", "UTC", "2023-01-10T06:51:47Z"),
        ("2023-01-10", "UTC", "2023-01-10T00:00:00Z"),  # a date alone is midnight
        ("2023-07-01 12:00:00", "America/New_York", "2023-07-01T16:00:00Z"),  # EDT is UTC-4
        ("2023-01-01 12:00:00", "America/New_York", "2023-01-01T17:00:00Z"),  # EST is UTC-5
    ],
)
def test_naive_times_are_read_in_the_mapping_zone(text, zone, expected):
    assert parse_one(text, timezone=zone) == (expected, None)


# --- DST: gaps and overlaps are reasons, never shifts ----------------------------------------

@pytest.mark.parametrize(
    ("text", "zone"),
    [
        # Europe/Berlin: clocks jump 02:00 -> 03:00 on the last Sunday of March
        ("2023-03-26 02:30:00", "Europe/Berlin"),
        ("2023-03-26 02:00:00", "Europe/Berlin"),
        ("2019-03-31 02:59:59", "Europe/Berlin"),
        # America/New_York: 02:00 -> 03:00 on the second Sunday of March
        ("2023-03-12 02:30:00", "America/New_York"),
    ],
)
def test_nonexistent_local_time_is_invalid(text, zone):
    assert parse_one(text, timezone=zone) == (
        None,
        f"timestamp: '{text}' does not exist in {zone} (clocks went forward for DST); "
        "fix the time or give it with an offset",
    )


@pytest.mark.parametrize(
    ("text", "zone", "first", "second"),
    [
        # Berlin: 03:00 CEST -> 02:00 CET on the last Sunday of October; 02:xx happens twice
        ("2023-10-29 02:30:00", "Europe/Berlin", "+02:00", "+01:00"),
        ("2019-10-27 02:40:00", "Europe/Berlin", "+02:00", "+01:00"),
        # New York: 02:00 EDT -> 01:00 EST on the first Sunday of November; 01:xx happens twice
        ("2023-11-05 01:30:00", "America/New_York", "-04:00", "-05:00"),
    ],
)
def test_ambiguous_local_time_is_invalid_with_both_offsets(text, zone, first, second):
    assert parse_one(text, timezone=zone) == (
        None,
        f"timestamp: '{text}' is ambiguous in {zone} (clocks went back for DST); "
        f"give it with its offset: {first} the first time, {second} the second",
    )


@pytest.mark.parametrize(
    ("text", "zone", "expected"),
    [
        ("2023-03-26 01:59:59", "Europe/Berlin", "2023-03-26T00:59:59Z"),  # last second of CET
        ("2023-03-26 03:00:00", "Europe/Berlin", "2023-03-26T01:00:00Z"),  # first second of CEST
        ("2023-03-26 03:10:00", "Europe/Berlin", "2023-03-26T01:10:00Z"),
        ("2023-10-29 01:59:59", "Europe/Berlin", "2023-10-28T23:59:59Z"),  # still CEST
        ("2023-10-29 03:00:00", "Europe/Berlin", "2023-10-29T02:00:00Z"),  # CET again
        ("2023-03-12 01:59:59", "America/New_York", "2023-03-12T06:59:59Z"),  # EST
        ("2023-03-12 03:00:00", "America/New_York", "2023-03-12T07:00:00Z"),  # EDT
        ("2023-11-05 02:00:00", "America/New_York", "2023-11-05T07:00:00Z"),  # EST again
    ],
)
def test_times_next_to_the_dst_switch_convert_correctly(text, zone, expected):
    assert parse_one(text, timezone=zone) == (expected, None)


def test_dst_rules_apply_with_a_strptime_format_too():
    fmt = "%d.%m.%Y %H:%M"
    assert parse_one("26.03.2023 02:30", timezone="Europe/Berlin", fmt=fmt)[0] is None
    assert "is ambiguous" in parse_one("29.10.2023 02:30", timezone="Europe/Berlin", fmt=fmt)[1]
    assert parse_one("26.03.2023 03:30", timezone="Europe/Berlin", fmt=fmt) == ("2023-03-26T01:30:00Z", None)


def test_one_bad_value_does_not_touch_its_neighbours():
    values = pd.Series(["2023-10-29 02:30:00", "2023-10-29 03:30:00", None, "2023-03-26 02:30"], dtype=object)
    times, why = parse_datetimes(values, timezone="Europe/Berlin")
    assert format_utc(times).tolist()[1] == "2023-10-29T02:30:00Z"
    assert times.isna().tolist() == [True, False, True, True]
    assert why.notna().tolist() == [True, False, False, True]


# --- epoch numbers -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("1681109507", None, epoch_utc(1681109507)),  # seconds by magnitude
        ("1681109507000", None, epoch_utc(1681109507)),  # milliseconds by magnitude
        ("1681109507999", None, epoch_utc(1681109507)),  # milliseconds are cut, not rounded
        ("1681109507.75", None, epoch_utc(1681109507)),
        ("0", "s", "1970-01-01T00:00:00Z"),  # before 1990 only with the unit given (see below)
        ("86400", "s", "1970-01-02T00:00:00Z"),
        ("631152000", None, "1990-01-01T00:00:00Z"),  # the first second read by magnitude
        ("4102444800", None, epoch_utc(4102444800)),  # 2100: still seconds
        ("-86400", "s", "1969-12-31T00:00:00Z"),
        ("20230410", "s", "1970-08-23T03:33:30Z"),  # the unit given: as asked, even if it looks like a date
        ("1681109507", "s", epoch_utc(1681109507)),
        ("1681109507000", "ms", epoch_utc(1681109507)),
        ("1681109507", "ms", epoch_utc(1681109)),  # the unit wins over the magnitude
        ("86400000", "ms", "1970-01-02T00:00:00Z"),
    ],
)
def test_epoch_numbers(text, unit, expected):
    assert parse_one(text, unit=unit) == (expected, None)


@pytest.mark.parametrize(
    ("text", "unit", "reason"),
    [
        ("1681109507000", "s", "timestamp: epoch number '1681109507000' is outside the years 1900-2199; check the unit (s or ms)"),
        ("99999999999", None, "timestamp: epoch number '99999999999' is outside the years 1900-2199; check the unit (s or ms)"),
        ("99999999999999999999", None, "timestamp: epoch number '99999999999999999999' is outside the years 1900-2199; check the unit (s or ms)"),
        ("100000000000000000", None, "timestamp: epoch number '100000000000000000' is outside the years 1900-2199; check the unit (s or ms)"),
        ("2023-04-10T06:51:47Z", "s", "timestamp: expected epoch seconds, got '2023-04-10T06:51:47Z'"),
        ("soon", "ms", "timestamp: expected epoch milliseconds, got 'soon'"),
    ],
)
def test_unusable_epoch_numbers_are_reasons(text, unit, reason):
    assert parse_one(text, unit=unit) == (None, reason)


# --- strptime format ---------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "fmt", "zone", "expected"),
    [
        ("10.04.2023 06:51", "%d.%m.%Y %H:%M", "UTC", "2023-04-10T06:51:00Z"),
        ("10.04.2023 06:51", "%d.%m.%Y %H:%M", "Europe/Berlin", "2023-04-10T04:51:00Z"),
        ("04/10/2023 6:51 PM", "%m/%d/%Y %I:%M %p", "UTC", "2023-04-10T18:51:00Z"),
        # offsets in the text win over the zone; summer and winter offsets mix in one column
        ("10.04.2023 06:51 +0200", "%d.%m.%Y %H:%M %z", "America/New_York", "2023-04-10T04:51:00Z"),
        ("10.01.2023 06:51 +0100", "%d.%m.%Y %H:%M %z", "America/New_York", "2023-01-10T05:51:00Z"),
    ],
)
def test_strptime_format(text, fmt, zone, expected):
    assert parse_one(text, fmt=fmt, timezone=zone) == (expected, None)


def test_mixed_offsets_with_a_format_parse_together():
    values = pd.Series(["10.04.2023 06:51 +0200", "10.01.2023 06:51 +0100"], dtype=object)
    times, why = parse_datetimes(values, fmt="%d.%m.%Y %H:%M %z")
    assert format_utc(times).tolist() == ["2023-04-10T04:51:00Z", "2023-01-10T05:51:00Z"]
    assert why.isna().all()


@pytest.mark.parametrize(
    ("text", "options", "reason"),
    [
        ("10/04/2023", {"fmt": "%d.%m.%Y"}, "timestamp: cannot read '10/04/2023' as a date-time (format '%d.%m.%Y')"),
        ("31.10.2021 02:30 +25:00", {"fmt": "%d.%m.%Y %H:%M"},
         "timestamp: cannot read '31.10.2021 02:30 +25:00' as a date-time (format '%d.%m.%Y %H:%M')"),
        ("2023-02-30T10:00:00+02:00", {"fmt": "%d.%m.%Y %H:%M"},
         "timestamp: cannot read '2023-02-30T10:00:00+02:00' as a date-time (format '%d.%m.%Y %H:%M')"),
        ("04/10/2023 06:51", {}, "timestamp: cannot read '04/10/2023 06:51' as a date-time; "
                                 "give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")"),
        ("yesterday", {"label": "attributes.deployment_start_time"},
         "attributes.deployment_start_time: cannot read 'yesterday' as a date-time; "
         "give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")"),
        ("2023-02-30 10:00", {}, "timestamp: cannot read '2023-02-30 10:00' as a date-time; "
                                 "give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")"),
    ],
)
def test_unreadable_times_are_reasons(text, options, reason):
    assert parse_one(text, **options) == (None, reason)


def test_missing_values_are_neither_times_nor_reasons():
    times, why = parse_datetimes(pd.Series([None, np.nan], dtype=object))
    assert times.isna().all() and why.isna().all()


def test_format_utc():
    times = pd.Series(
        [pd.Timestamp("2024-02-29 23:59:59.9", tz="UTC"), pd.NaT, pd.Timestamp("2001-01-01 01:00", tz="Europe/Berlin")]
    ).astype("datetime64[ms, UTC]")
    out = format_utc(times)
    assert out.iloc[0] == "2024-02-29T23:59:59Z"
    assert pd.isna(out.iloc[1])
    assert out.iloc[2] == "2001-01-01T00:00:00Z"


# --- hour-only offsets (psql's timestamptz) ---------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-04-10 06:51:47+02", "2023-04-10T04:51:47Z"),  # +02 is +02:00
        ("2023-04-10 06:51:47-05", "2023-04-10T11:51:47Z"),
        ("2023-04-10T06:51:47+02", "2023-04-10T04:51:47Z"),
        ("2023-04-10 06:51:47.123456+02", "2023-04-10T04:51:47Z"),  # psql with fractions
        ("2023-04-10 06:51+02", "2023-04-10T04:51:00Z"),
        ("2023-04-10 06:51:47 +02", "2023-04-10T04:51:47Z"),  # a space before it
        ("2023-10-29 02:30:00+01", "2023-10-29T01:30:00Z"),  # the second 02:30 in Berlin: exact with its offset
        ("2023-04-10 06:51:47+00", "2023-04-10T06:51:47Z"),
    ],
)
def test_hour_only_offsets_as_psql_prints_them(text, expected):
    assert parse_one(text, timezone="Europe/Berlin") == (expected, None)


def test_hour_only_offsets_mixed_with_naive_times_and_others():
    # all of them in one column used to stop the run ("Mixed timezones detected" / "Already tz-aware")
    values = pd.Series(
        ["2023-04-10 06:51:47+02", "2023-04-10 06:51:47", "2023-01-10 06:51:47-05", "2023-04-10T06:51:47Z",
         "2023-04-10 06:51:47+0530", "2023-04-10 06-05"],
        dtype=object,
    )
    times, why = parse_datetimes(values, timezone="Europe/Berlin")
    assert utc_texts(times)[:5] == [
        "2023-04-10T04:51:47Z", "2023-04-10T04:51:47Z", "2023-01-10T11:51:47Z", "2023-04-10T06:51:47Z",
        "2023-04-10T01:21:47Z",
    ]
    assert why.isna().tolist() == [True] * 5 + [False]
    assert why.iloc[5].startswith("timestamp: cannot read '2023-04-10 06-05' as a date-time")  # not an offset


def test_a_group_pandas_refuses_never_escapes(monkeypatch):
    """Whatever pandas raises on a group, the values at fault become unreadable rows; the others
    are still read. (Minutes only: the plain `YYYY-MM-DD HH:MM:SS` shape is read without pandas.)"""
    real = pd.to_datetime

    def fussy(values, *args, **kwargs):
        if any(v == "2023-04-10 07:00" for v in values):
            raise ValueError("pandas had a bad day")
        return real(values, *args, **kwargs)

    monkeypatch.setattr(pd, "to_datetime", fussy)
    values = pd.Series(
        ["2023-04-10 06:00", "2023-04-10 07:00", "2023-04-10 08:00", "2023-04-10T09:00:00+02",
         "2023-04-10 10:00"],
        dtype=object,
    )
    times, why = parse_datetimes(values)
    assert utc_texts(times) == [
        "2023-04-10T06:00:00Z", None, "2023-04-10T08:00:00Z", "2023-04-10T07:00:00Z", "2023-04-10T10:00:00Z"
    ]
    assert why.tolist()[1] == (
        "timestamp: cannot read '2023-04-10 07:00' as a date-time; "
        "give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")"
    )


@pytest.mark.parametrize(
    "text", ["2023-04-10T06:51:47+02:00:00", "2023-04-10T06:51:47+25:00", "2023-04-10T06:51:47 UTC", "2023-13-45 06:51+02"]
)
def test_odd_zones_are_unreadable_rows(text):
    times, why = parse_datetimes(pd.Series([text, "2023-04-10 06:51:47"], dtype=object), timezone="Europe/Berlin")
    assert utc_texts(times) == [None, "2023-04-10T04:51:47Z"]
    assert why.iloc[0].startswith(f"timestamp: cannot read '{text}' as a date-time")


@pytest.mark.parametrize("text", ["0000-01-01T00:00:00Z", "9999-12-31T23:59:59-14:00", "1899-12-31 23:00", "2200-01-01"])
def test_text_times_outside_the_years_1900_2199_are_reasons(text):
    # as for epoch numbers; year 10000 could not even be written in four digits. pandas 2 cannot
    # represent years 0000 and 9999 at all: there the row is unreadable, which is invalid too.
    time, reason = parse_one(text)
    assert time is None
    pandas2_unreadable = pd.__version__ < "3" and reason.startswith(f"timestamp: cannot read '{text}'")
    assert reason == f"timestamp: '{text}' is outside the years 1900-2199" or pandas2_unreadable


# --- with a format: values with an offset, and ISO 8601, still read ------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("31.10.2021 02:30 +02:00", "2021-10-31T00:30:00Z"),  # the first 02:30 (CEST)
        ("31.10.2021 02:30 +01:00", "2021-10-31T01:30:00Z"),  # the second 02:30 (CET)
        ("31.10.2021 02:30+0100", "2021-10-31T01:30:00Z"),
        ("31.10.2021 02:30 +01", "2021-10-31T01:30:00Z"),
        ("31.10.2021 02:30Z", "2021-10-31T02:30:00Z"),
        ("31.10.2021 02:30 -05:30", "2021-10-31T08:00:00Z"),
        ("2021-10-31T02:30:00+02:00", "2021-10-31T00:30:00Z"),  # ISO 8601 with an offset
        ("2021-10-31T02:30:00Z", "2021-10-31T02:30:00Z"),
        ("2021-10-31 02:30:00+01", "2021-10-31T01:30:00Z"),
        ("2021-10-31 03:30", "2021-10-31T02:30:00Z"),  # naive ISO: in the mapping's zone (CET)
        ("31.10.2021 03:30", "2021-10-31T02:30:00Z"),  # the format itself, as before
    ],
)
def test_format_values_with_an_offset_or_in_iso(text, expected):
    # the README's advice for a DST-ambiguous row ("give it with its offset") works with a format
    assert parse_one(text, fmt="%d.%m.%Y %H:%M", timezone="Europe/Berlin") == (expected, None)


def test_format_column_mixing_the_format_offsets_and_iso():
    values = pd.Series(
        ["31.10.2021 01:30", "31.10.2021 02:30", "31.10.2021 02:30 +02:00", "31.10.2021 02:30 +01:00",
         "2021-10-31T02:30:00+01:00", "31.10.2021 04:30", None, "31.10.2021 02:30 +0200x"],
        dtype=object,
    )
    times, why = parse_datetimes(values, fmt="%d.%m.%Y %H:%M", timezone="Europe/Berlin")
    assert utc_texts(times) == [
        "2021-10-30T23:30:00Z", None, "2021-10-31T00:30:00Z", "2021-10-31T01:30:00Z", "2021-10-31T01:30:00Z",
        "2021-10-31T03:30:00Z", None, None,
    ]
    assert why.iloc[1].startswith("timestamp: '31.10.2021 02:30' is ambiguous in Europe/Berlin")
    assert why.iloc[7] == "timestamp: cannot read '31.10.2021 02:30 +0200x' as a date-time (format '%d.%m.%Y %H:%M')"
    assert why.notna().tolist() == [False, True, False, False, False, False, False, True]


# --- all-digit values that are not epoch times ----------------------------------------------------

@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("20230410", "timestamp: '20230410' looks like a date, not epoch seconds; give format: \"%Y%m%d\" (or unit: s)"),
        ("19991231", "timestamp: '19991231' looks like a date, not epoch seconds; give format: \"%Y%m%d\" (or unit: s)"),
        ("202304100651", "timestamp: '202304100651' looks like a date and time, not epoch milliseconds; "
                         "give format: \"%Y%m%d%H%M\" (or unit: ms)"),
        ("20231345", "timestamp: epoch number '20231345' would be before 1990 as epoch seconds; "  # no date
                     "give unit: s if that is right, or a format: if it is not epoch time"),
        ("0", "timestamp: epoch number '0' would be before 1990 as epoch seconds; "
              "give unit: s if that is right, or a format: if it is not epoch time"),
        ("-86400", "timestamp: epoch number '-86400' would be before 1990 as epoch seconds; "
                   "give unit: s if that is right, or a format: if it is not epoch time"),
        ("631151999", "timestamp: epoch number '631151999' would be before 1990 as epoch seconds; "
                      "give unit: s if that is right, or a format: if it is not epoch time"),
        ("100000000000", "timestamp: epoch number '100000000000' would be before 1990 as epoch milliseconds; "
                         "give unit: ms if that is right, or a format: if it is not epoch time"),
    ],
)
def test_epoch_by_magnitude_before_1990_is_a_reason(text, reason):
    # 20230410 used to become 1970-08-23 without a word
    assert parse_one(text) == (None, reason)


def test_numbers_that_look_like_dates_read_with_their_format():
    assert parse_one("20230410", fmt="%Y%m%d", timezone="Europe/Berlin") == ("2023-04-09T22:00:00Z", None)


def test_hour_only_offsets_end_to_end(tmp_path, write, run_cli):
    # the psql timestamptz column that used to end in "Internal error"
    data = write(tmp_path, "in.csv", "service,finished_at\nweb,2023-04-10 06:51:47+02\nweb,2023-04-11 06:51:47\n")
    mapping = write(
        tmp_path, "m.yaml",
        "source: {format: csv, timezone: Europe/Berlin}\nentityId: service\ntimestamp: finished_at\n",
    )
    code, out, err = run_cli("preview", data, "-m", mapping, "--out", tmp_path / "out.jsonl")
    assert (code, err) == (0, "")
    sent = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert '"2023-04-10T04:51:47Z"' in sent and '"2023-04-11T04:51:47Z"' in sent


# --- status ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        *[(s, "success") for s in ("success", "Success", "SUCCESS", "succeeded", "Succeeded", "successful",
                                    "SuccessFul", "passed", "PASSED")],
        *[(s, "failed") for s in ("failed", "FAILED", "Failed", "failure", "Failure", "error", "ERROR")],
    ],
)
def test_status_spellings(text, expected):
    out, why = normalize_status(pd.Series([text], dtype=object))
    assert out.iloc[0] == expected
    assert pd.isna(why.iloc[0])


@pytest.mark.parametrize("text", ["Succes", "ok", "aborted", "unstable", "fail", "errors", "0"])
def test_other_status_spellings_are_reasons(text):
    out, why = normalize_status(pd.Series([text], dtype=object), "attributes.status")
    assert pd.isna(out.iloc[0])
    assert why.iloc[0] == (
        f"attributes.status: '{text}' is neither success nor failed; "
        "add a lookup to the status rule or a filter rule"
    )


def test_empty_status_is_no_reason():
    out, why = normalize_status(pd.Series([None, "passed"], dtype=object))
    assert pd.isna(out.iloc[0]) and pd.isna(why.iloc[0])
    assert out.iloc[1] == "success"


def test_ambiguous_row_fixed_with_its_offset_end_to_end(tmp_path, write, run_cli):
    # the README's advice for a row reported ambiguous, with a format in the mapping
    data = write(
        tmp_path, "in.csv",
        "service,build,finished\nweb,1,31.10.2021 02:30\nweb,2,31.10.2021 02:30 +01:00\nweb,3,2021-10-31T02:45:00+02:00\n",
    )
    mapping = write(
        tmp_path, "m.yaml",
        "source: {format: csv, timezone: Europe/Berlin}\nentityId: service\n"
        "timestamp: {from: finished, format: \"%d.%m.%Y %H:%M\"}\nattributes:\n  build_id: build\n",
    )
    code, out, err = run_cli("preview", data, "-m", mapping, "--out", tmp_path / "out.jsonl")
    assert (code, err) == (0, "")
    assert "1 invalid" in out and "is ambiguous in Europe/Berlin" in out
    sent = (tmp_path / "out.jsonl").read_text(encoding="utf-8")
    assert '"2021-10-31T01:30:00Z"' in sent and '"2021-10-31T00:45:00Z"' in sent


# --- the fast path for plain date-times agrees with the general way -----------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

from backfill.normalize import _parse_general  # noqa: E402

_ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Santiago"]


@st.composite
def _plain_like(draw):
    """Text near the plain `YYYY-MM-DD HH:MM:SS` shape: edge values of every field, both
    separators, a Z or z or none, and now and then one character replaced."""
    year = draw(st.sampled_from([1899, 1900, 1970, 2000, 2020, 2021, 2023, 2024, 2199, 2200]))
    month = draw(st.integers(0, 13))
    day = draw(st.sampled_from([0, 1, 15, 28, 29, 30, 31, 32]))
    hour = draw(st.sampled_from([0, 1, 2, 3, 23, 24]))
    minute = draw(st.sampled_from([0, 30, 59, 60]))
    second = draw(st.sampled_from([0, 59, 60]))
    sep = draw(st.sampled_from([" ", "T", "t", "_"]))
    tail = draw(st.sampled_from(["", "Z", "z", " ", "0"]))
    text = f"{year:04d}-{month:02d}-{day:02d}{sep}{hour:02d}:{minute:02d}:{second:02d}{tail}"
    if draw(st.booleans()) and draw(st.booleans()):
        at = draw(st.integers(0, len(text) - 1))
        text = text[:at] + draw(st.sampled_from(["/", "x", "9", ":", "-", "\u0661"])) + text[at + 1:]
    return text


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.one_of(_plain_like(), st.none()), min_size=1, max_size=12), zone=st.sampled_from(_ZONES))
def test_plain_date_times_read_as_the_general_way_reads_them(values, zone):
    """Property: the numpy fast path gives the same times and the same reasons as pandas' way."""
    series = pd.Series(values, dtype=object)
    fast, fast_why = parse_datetimes(series, timezone=zone)
    slow, slow_why = _parse_general(series, zone, None, None, "timestamp")
    assert utc_texts(fast) == utc_texts(slow)
    assert fast_why.fillna("").tolist() == slow_why.fillna("").tolist()


def test_plain_date_times_across_dst_keep_their_reasons():
    values = pd.Series(["2021-03-28 02:30:00", "2021-10-31 02:30:00", "2021-10-31 03:30:00", "2021-03-28T01:59:59Z"])
    times, why = parse_datetimes(values, timezone="Europe/Berlin")
    assert utc_texts(times) == [None, None, "2021-10-31T02:30:00Z", "2021-03-28T01:59:59Z"]
    assert "does not exist in Europe/Berlin" in why[0] and "is ambiguous in Europe/Berlin" in why[1]
    assert why[2:].isna().all()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-62_167_219_200, 253_402_300_799), min_size=1, max_size=300))
def test_utc_text_is_numpys_for_every_second_of_the_years_0000_to_9999(seconds):
    """format_utc's byte arithmetic (civil date, two-digit fields) against numpy's own formatting."""
    values = np.array(seconds, dtype="int64")
    times = pd.Series(values.astype("datetime64[s]")).dt.tz_localize("UTC")
    expected = [f"{text}Z" for text in np.datetime_as_string(values.astype("datetime64[s]"), unit="s")]
    assert utc_texts(times) == expected


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), st.text(alphabet=st.sampled_from(list("ab ,\t\n\xa0\u2003é\x85\x1f0")), max_size=5))),
    start=st.integers(0, 3),
)
def test_stripped_is_trim_and_empty_as_null(values, start):
    """The byte look-ahead of `stripped` never changes the answer of the kernels it skips,
    also on a slice of an array (an offset into its buffers)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from backfill.normalize import stripped

    array = pa.array(values, type=pa.string()).slice(min(start, len(values)))
    trimmed = pc.utf8_trim_whitespace(array)
    expected = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    assert stripped(array).to_pylist() == expected.to_pylist()
    assert stripped(pa.chunked_array([array, array], type=pa.string())).to_pylist() == expected.to_pylist() * 2


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
                                  "Europe/Amsterdam", "Asia/Tehran"])
def test_dst_reasons_of_a_few_rows_are_those_of_many(zone, monkeypatch):
    """Every DST gap and overlap of a zone, 1900-2030, read both ways: the few-row reasons
    (written one by one) are the vectorized reasons, word for word."""
    import backfill.normalize as normalize
    from zoneinfo import ZoneInfo

    moments = pd.date_range("1900-01-01", "2030-12-31 23:30", freq="30min")
    local = moments.tz_localize(ZoneInfo(zone), ambiguous="NaT", nonexistent="NaT")
    lost = moments[local.isna()]
    values = pd.Series(lost.strftime("%Y-%m-%d %H:%M:%S"), dtype=object)
    assert len(values) > 0
    monkeypatch.setattr(normalize, "_FEW", len(values))
    times_few, why_few = parse_datetimes(values, timezone=zone)
    monkeypatch.setattr(normalize, "_FEW", 0)
    times_many, why_many = parse_datetimes(values, timezone=zone)
    assert why_few.tolist() == why_many.tolist()
    assert times_few.isna().all() and times_many.isna().all()
    assert why_few.str.contains("does not exist|is ambiguous").all()
