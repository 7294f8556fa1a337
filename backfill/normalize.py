"""Vectorized normalization of values: date-times to UTC, status spellings.

Every function takes a Series of text (missing = NaN) and returns the normalized Series plus a
Series of reasons (text where a value is present but unusable, NaN elsewhere), so the planner can
report each invalid row with why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backfill.display import cut
from backfill.events import STATUS_SYNONYMS

UTC_DTYPE = "datetime64[s, UTC]"


def _text_dtype() -> object:
    """Arrow-backed text with NaN for missing where pyarrow is there (C++ string kernels, compact
    memory); plain Python objects otherwise."""
    try:
        return pd.StringDtype("pyarrow", na_value=np.nan)
    except (TypeError, ImportError):
        try:
            return pd.StringDtype("pyarrow_numpy")
        except (TypeError, ImportError):
            return object


TEXT = _text_dtype()


def arrow_text(values: pd.Series):
    """A text Series as a pyarrow `string` array (chunked or not): zero-copy for arrow-backed text;
    pandas 2 stores `large_string`, and a column with no value at all comes as `null`."""
    import pyarrow as pa

    array = pa.array(values.astype(TEXT).array)
    return array if array.type == pa.string() else array.cast(pa.string())


def text_bytes(array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, bytes) of an arrow `string` (or `large_string`) array, zero-copy: value i is bytes[offsets[i]:
    offsets[i + 1]] (a null's span is empty, or ignorable: arrow does not promise). For scans of
    whole columns by numpy, far cheaper than a kernel when the answer is usually "none"."""
    import pyarrow as pa

    _, offsets, data = array.buffers()
    width = 8 if pa.types.is_large_string(array.type) else 4
    bounds = np.frombuffer(offsets, dtype=np.int64 if width == 8 else np.int32, count=len(array) + 1,
                           offset=array.offset * width)
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return bounds, raw


# bytes a value that utf8_trim_whitespace changes may start or end with: ASCII blanks, or a byte of
# a non-ASCII character (some are Unicode spaces); a superset, so a value outside it is left alone
MAYBE_BLANK = np.zeros(256, dtype=bool)
MAYBE_BLANK[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
MAYBE_BLANK[0x80:] = True


def stripped(values):
    """An arrow `string` array (chunked or not) with blanks around each value trimmed and empty
    values null. When no value starts or ends with a byte that may be a blank, one numpy look at
    the first and last bytes settles it and the text is not copied (empties only lose validity)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        return pa.chunked_array([stripped(chunk) for chunk in values.chunks], type=pa.string())
    bounds, raw = text_bytes(values)
    lengths = np.diff(bounds)
    filled = lengths > 0
    if values.null_count:
        filled &= np.asarray(values.is_valid())
    if not filled.any():
        return pa.nulls(len(values), pa.string())
    if (MAYBE_BLANK[raw[bounds[:-1][filled]]] | MAYBE_BLANK[raw[bounds[1:][filled] - 1]]).any():
        trimmed = pc.utf8_trim_whitespace(values)
        return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    if filled.all():
        return values
    _, offsets, data = values.buffers()
    bits = np.concatenate([np.zeros(values.offset, dtype=bool), filled]) if values.offset else filled
    valid = pa.py_buffer(np.packbits(bits, bitorder="little"))
    return pa.StringArray.from_buffers(len(values), offsets, data, valid, offset=values.offset)


def holds_nul(values) -> bool:
    """Whether any value of an arrow `string` array (chunked or not) holds a NUL character."""
    for chunk in getattr(values, "chunks", [values]):
        bounds, raw = text_bytes(chunk)
        if bounds[-1] > bounds[0] and raw[bounds[0] : bounds[-1]].min() == 0:
            return True
    return False


def map_values(values: pd.Series, table: dict[str, str]) -> pd.Series:
    """values.map(table) by arrow kernels: each value's position in the table's keys, then a take
    of the outputs (a value not in the table, or missing, gives missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pa.array(list(table), type=pa.string())
    outputs = pa.array(list(table.values()), type=pa.string())
    positions = pc.index_in(arrow_text(values), value_set=keys)
    return pd.Series(pc.take(outputs, positions), index=values.index, dtype=TEXT)


_EPOCH = r"-?[0-9]+(?:\.[0-9]+)?"
# A time with a zone: Z, +HH:MM or +HHMM; or an hour-only offset after a time, as psql prints
# timestamptz ("2023-04-10 06:51:47+02", "...47.5-05"), which needs a time before it so that a
# naive "2023-04-10 06-05" is not taken for one.
_AWARE = (
    r"[Tt ][0-9].*(?:Z|z|[+-][0-9]{2}:?[0-9]{2})$"
    r"|[Tt ][0-9]{1,2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?[ \t]*[+-][0-9]{2}$"
)
_SPACED_OFFSET = r"[ \t][+-][0-9]{2}(?::?[0-9]{2})?$"
_SPACE_BEFORE_OFFSET = r"[ \t]+([+-][0-9]{2}(?::?[0-9]{2})?)$"
_HOUR_OFFSET = r"[+-][0-9]{2}$"
_ISO_DATE = r"^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"
# <text in the format> followed by Z or an offset (+HH:MM, +HHMM, +HH), a space or none between
_TRAILING_OFFSET = r"^(.*?)[ \t]*(?:([Zz])|([+-])([0-9]{2})(?::?([0-9]{2}))?)$"
_TRAILING_OFFSET_NAMED = r"^(?P<b>.*?)[ \t]*(?:(?P<z>[Zz])|(?P<s>[+-])(?P<h>[0-9]{2})(?::?(?P<m>[0-9]{2}))?)$"
MS_THRESHOLD = 100_000_000_000  # epoch numbers at or above this are milliseconds (1e11 s is year 5138)
EPOCH_MIN, EPOCH_MAX = -2_208_988_800, 7_258_118_399  # epoch seconds of 1900-01-01 and 2199-12-31T23:59:59
# Epoch numbers told by magnitude (no unit) before this are more likely something else (20230410 is
# a date, not 1970-08-23): a reason, not a silent 1970s time.
EPOCH_GUESS_MIN = 631_152_000  # 1990-01-01T00:00:00Z
_TEXT_MIN, _TEXT_END = pd.Timestamp("1900-01-01", tz="UTC"), pd.Timestamp("2200-01-01", tz="UTC")


def _empty_like(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    return (
        pd.Series(pd.NaT, index=values.index, dtype=UTC_DTYPE),
        pd.Series(np.nan, index=values.index, dtype=object),
    )


def _why(values: pd.Series, what: str, hint: str) -> pd.Series:
    """Reasons quoting each value, a long one cut (the invalid-row file keeps the whole value)."""
    return what + " '" + values.astype(object).astype(str).map(cut) + "'" + hint


def nul_reasons(values: pd.Series, label: str) -> pd.Series:
    """A reason where a value holds a NUL character (which no event may carry), NaN elsewhere:
    one arrow kernel over the column; the row is invalid rather than the byte sent or dropped."""
    import pyarrow.compute as pc

    why = pd.Series(np.nan, index=values.index, dtype=object)
    array = arrow_text(values)
    if not holds_nul(array):  # the usual answer, from one scan of the bytes
        return why
    found = pc.fill_null(pc.match_substring(array, "\x00"), False).to_numpy(zero_copy_only=False)
    if found.any():
        why[found] = (
            f"{label}: " + values[found].astype(object).astype(str).map(cut).map(repr)
            + " holds a NUL character (\\x00); remove it from the input"
        )
    return why


def parse_datetimes(
    values: pd.Series,
    *,
    timezone: str = "UTC",
    fmt: str | None = None,
    unit: str | None = None,
    label: str = "timestamp",
) -> tuple[pd.Series, pd.Series]:
    """Parse text date-times to UTC (second precision).

    Accepted: ISO 8601 with Z or an offset (+HH:MM, +HHMM, +HH); naive date-times, read in
    `timezone` (a time that does not exist or is ambiguous there because of a DST change is
    invalid, never shifted); epoch seconds or milliseconds (by `unit`, else by magnitude, and then
    only from 1990 on); or text in the strptime `fmt`. With `fmt`, a value that does not match it
    is still read if it is ISO 8601, or the format's text followed by Z or an offset.
    """
    if not fmt and not unit:
        plain, seconds, shifted = _plain_times(values, timezone)
        if plain.any() or shifted.any():
            out = pd.Series(seconds.astype("datetime64[s]"), index=values.index).dt.tz_localize("UTC")
            why = pd.Series(np.nan, index=values.index, dtype=object)
            if shifted.any():  # plain local times in a DST gap or overlap: said why, as the general way does
                if shifted.sum() <= _FEW:
                    texts = values[shifted].astype(object).astype(str).tolist()
                    why[shifted] = _dst_reasons(seconds[shifted], texts, timezone, label)
                else:
                    naive = pd.Series(seconds[shifted].astype("datetime64[s]"), index=values.index[shifted])
                    _localize(naive, values[shifted], timezone, label, out, why)
                out[shifted] = pd.NaT
            rest = ~plain & ~shifted & values.notna().to_numpy()
            if rest.any():
                times, reasons = _parse_general(values[rest], timezone, fmt, unit, label)
                out[rest] = times.to_numpy()
                why[rest] = reasons.to_numpy()
            return out, why
    return _parse_general(values, timezone, fmt, unit, label)


# The common shape of a date-time column, `YYYY-MM-DD HH:MM:SS` (or with T; or that and a Z), in
# the years 1900-2199: read from the text's bytes by numpy arithmetic, a few operations on whole
# columns. Anything else, or a time in a DST gap or overlap, goes the general way.
_PLAIN_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_NAT = np.iinfo("int64").min


_MONTH_DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int32)


def _days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (years from 0 on), by integer
    arithmetic on whole columns: the year taken to start on 1 March, so February comes last."""
    y = year - (month <= 2)
    era = y // 400
    of_era = y - era * 400
    of_year = (153 * (month + np.where(month > 2, -3, 9)) + 2) // 5 + day - 1
    return era * 146097 + of_era * 365 + of_era // 4 - of_era // 100 + of_year - 719468


def _plain_times(values: pd.Series, timezone: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(which values have the plain shape and are a real time, their epoch seconds, which are
    plain local times in a DST gap or overlap of `timezone`): read exactly as the general way
    reads them, naive ones in `timezone`, with the Z in UTC. The seconds are UTC, but local
    (naive) for the DST rows."""
    import pyarrow as pa

    array = arrow_text(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    n = len(array)
    plain = np.zeros(n, dtype=bool)
    shifted = np.zeros(n, dtype=bool)
    seconds = np.full(n, _NAT, dtype="int64")
    bounds, raw = text_bytes(array)
    if not len(raw) or n == 0:
        return plain, seconds, shifted
    lengths = np.diff(bounds)
    if array.null_count:
        lengths = np.where(np.asarray(array.is_valid()), lengths, 0)
    rows = np.flatnonzero((lengths == 19) | (lengths == 20))
    if not len(rows):
        return plain, seconds, shifted
    if len(rows) == n and bounds[-1] - bounds[0] == 19 * n:  # every value 19 bytes: a zero-copy view
        text = raw[bounds[0] : bounds[-1]].reshape(n, 19)
        zulu = np.zeros(n, dtype=bool)
    else:
        text = raw[bounds[:-1][rows, None] + np.arange(19, dtype=np.int32)]
        zulu = lengths[rows] == 20
        last = raw[np.minimum(bounds[rows] + 19, len(raw) - 1)]
        zulu_ok = ~zulu | (last == 0x5A)  # "Z"
    digits = text[:, _PLAIN_DIGITS] - np.uint8(48)  # a non-digit wraps above 9
    good = (digits <= 9).all(axis=1)
    good &= (text[:, 4] == 0x2D) & (text[:, 7] == 0x2D) & (text[:, 13] == 0x3A) & (text[:, 16] == 0x3A)
    good &= (text[:, 10] == 0x20) | (text[:, 10] == 0x54)  # " " or "T"
    if len(rows) != n or zulu.any():
        good &= zulu_ok
    pairs = digits.astype(np.int32)
    two = pairs[:, 0::2] * 10 + pairs[:, 1::2]  # century, year, month, day, hour, minute, second
    year = two[:, 0] * 100 + two[:, 1]
    month, day, hour, minute, second = (two[:, i] for i in range(2, 7))
    good &= (year >= 1900) & (year < 2200) & (month >= 1) & (month <= 12) & (day >= 1)
    good &= (hour < 24) & (minute < 60) & (second < 60)
    month = np.clip(month, 1, 12)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    good &= day <= _MONTH_DAYS[month - 1] + (leap & (month == 2))
    local = _days_from_civil(year, month, day).astype(np.int64) * 86400 + (hour * 3600 + minute * 60 + second)
    zoned = good & ~zulu
    if zoned.any() and timezone not in ("UTC", "Etc/UTC"):
        moved = pd.DatetimeIndex(local[zoned].astype("datetime64[s]")).tz_localize(
            timezone, ambiguous="NaT", nonexistent="NaT"
        )
        lost = np.zeros(len(rows), dtype=bool)
        lost[zoned] = moved.isna()  # a DST gap or overlap: kept local, for the reason
        utc = local.copy()
        utc[zoned] = moved.asi8
        shifted[rows[lost]] = True
        seconds[rows[lost]] = local[lost]
        good &= ~lost
        local = utc
    plain[rows[good]] = True
    seconds[rows[good]] = local[good]
    return plain, seconds, shifted


def _parse_general(
    values: pd.Series, timezone: str, fmt: str | None, unit: str | None, label: str
) -> tuple[pd.Series, pd.Series]:
    out, why = _empty_like(values)
    present = values.dropna()
    if present.empty:
        return out, why
    if unit or not fmt:
        is_number = present.str.isdigit()  # a cheap kernel; the full pattern only for the rest
        maybe = ~is_number & present.str.contains(".", regex=False) | present.str.startswith("-")
        if maybe.any():
            is_number[maybe] = present[maybe].str.fullmatch(_EPOCH)
    else:
        is_number = pd.Series(False, index=present.index)
    numbers = present[is_number]
    if len(numbers):
        _parse_epochs(numbers, unit, label, out, why)
    text = present[~is_number]
    if unit and len(text):
        why[text.index] = _why(text, f"{label}: expected epoch {'milliseconds' if unit == 'ms' else 'seconds'}, got", "")
        text = text.iloc[0:0]
    if len(text):
        if fmt:
            _parse_with_format(text, fmt, timezone, label, out, why)
            hint = f" (format {fmt!r})"
        else:
            _parse_automatic(text, timezone, label, out, why)
            hint = "; give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")"
        times = out[text.index]
        unreadable = times.isna() & why[text.index].isna()
        if unreadable.any():
            bad = text[unreadable]
            why[bad.index] = _why(bad, f"{label}: cannot read", f" as a date-time{hint}")
        far = (times < _TEXT_MIN) | (times >= _TEXT_END)  # as for epoch numbers; and 10000 has 5 digits
        if far.any():
            out[far[far].index] = pd.NaT
            why[far[far].index] = _why(text[far], f"{label}:", " is outside the years 1900-2199")
    return out, why


def _parse_epochs(numbers: pd.Series, unit: str | None, label: str, out: pd.Series, why: pd.Series) -> None:
    num = pd.to_numeric(numbers, errors="coerce").astype("float64")
    millis = (num.abs() >= MS_THRESHOLD) if unit is None else pd.Series(unit == "ms", index=num.index)
    seconds = np.floor(num.where(~millis, num / 1000))
    # far outside any deployment history (and pandas' range): a reason, not an overflow error
    in_range = seconds.between(EPOCH_MIN, EPOCH_MAX)
    early = in_range & (seconds < EPOCH_GUESS_MIN) if unit is None else pd.Series(False, index=num.index)
    good = seconds[in_range & ~early]
    if len(good):
        out[good.index] = pd.to_datetime(good.to_numpy(dtype="int64"), unit="s", utc=True)
    if not in_range.all():
        far = numbers[~in_range]
        why[far.index] = _why(
            far, f"{label}: epoch number", " is outside the years 1900-2199; check the unit (s or ms)"
        )
    if early.any():
        _early_epochs(numbers[early], millis[early], label, why)


def _early_epochs(numbers: pd.Series, millis: pd.Series, label: str, why: pd.Series) -> None:
    """Reasons for numbers that would be epoch times before 1990 (only the few rows concerned)."""
    date = numbers.str.fullmatch(r"[0-9]{8}")  # 20230410
    stamp = numbers.str.fullmatch(r"[0-9]{12}")  # 202304100651 (taken for milliseconds by its size)
    if date.any():
        date[date] = _to_datetime(numbers[date], format="%Y%m%d").notna()
    if stamp.any():
        stamp[stamp] = _to_datetime(numbers[stamp], format="%Y%m%d%H%M").notna()
    other = ~date & ~stamp
    if date.any():
        why[date[date].index] = _why(
            numbers[date], f"{label}:", " looks like a date, not epoch seconds; give format: \"%Y%m%d\" (or unit: s)"
        )
    if stamp.any():
        why[stamp[stamp].index] = _why(
            numbers[stamp], f"{label}:",
            " looks like a date and time, not epoch milliseconds; give format: \"%Y%m%d%H%M\" (or unit: ms)",
        )
    if other.any():
        for is_ms, name, short in ((False, "seconds", "s"), (True, "milliseconds", "ms")):
            rows = other & (millis == is_ms)
            if rows.any():
                why[rows[rows].index] = _why(
                    numbers[rows], f"{label}: epoch number",
                    f" would be before 1990 as epoch {name}; give unit: {short} if that is right, "
                    "or a format: if it is not epoch time",
                )


def _to_datetime(text: pd.Series, *, utc: bool = False, **options) -> pd.Series:
    """pd.to_datetime(errors="coerce") at second precision (fractions cut) that never raises.

    When pandas rejects a group as a whole (mixed zones, a value its parser chokes on), the group
    is halved until the values at fault are found, and those become NaT (so the caller reports
    them as unreadable). Without `utc`, a value pandas reads as zone-aware is NaT too (the naive
    paths must not see one); older pandas may lend a neighbour's zone to the whole group, so such
    a group is halved as well.
    """
    dtype = UTC_DTYPE if utc else "datetime64[s]"
    try:
        parsed = pd.to_datetime(text, errors="coerce", utc=utc, **options)
        if not (isinstance(parsed, pd.Series) and pd.api.types.is_datetime64_any_dtype(parsed.dtype)):
            raise TypeError("not one datetime column")  # older pandas: mixed zones give objects
        if (parsed.dt.tz is not None) != utc:  # zone-aware where naive was asked: find the culprits
            raise TypeError("zone-aware values in a naive group")
        # one resolution for every group (pandas picks one per call); floor, not truncate, before 1970
        return parsed.dt.floor("s").astype(dtype)
    except Exception:  # noqa: BLE001 - any failure of pandas' parser is unreadable input, not a crash
        if len(text) <= 1:
            return pd.Series(pd.NaT, index=text.index, dtype=dtype)
    middle = len(text) // 2
    halves = (text.iloc[:middle], text.iloc[middle:])
    return pd.concat([_to_datetime(half, utc=utc, **options) for half in halves])


def _parse_automatic(text: pd.Series, timezone: str, label: str, out: pd.Series, why: pd.Series) -> None:
    """ISO 8601 with a zone to UTC; naive ISO date-times read in `timezone`. Text that does not
    start with a digit is unreadable (pandas would read `now` and `today` as the current time)."""
    text = text[text.str.slice(0, 1).str.isdigit().fillna(False).astype(bool)]
    if text.empty:
        return
    text = _calendar_forms(text)
    has_zone = text.str.contains(_AWARE, regex=True)
    if has_zone.any():
        zoned = text[has_zone]
        odd = ~zoned.str.endswith("Z")  # the common case, cheaply; the patterns only for the rest
        if odd.any():  # "2021-04-28 21:50:00 +0200"; psql's "2021-04-28 21:50:00+02" (every row of such a column)
            fixed = zoned[odd]
            spaced = fixed.str.contains(_SPACED_OFFSET, regex=True)
            hour_only = fixed.str.contains(_HOUR_OFFSET, regex=True)  # before or after the space: same answer
            if spaced.any():  # rare; replace() with a group may be per-row Python
                fixed = fixed.where(~spaced, fixed[spaced].str.replace(_SPACE_BEFORE_OFFSET, r"\1", regex=True))
            if hour_only.any():  # +02 is +02:00 (older pandas reject the hour alone)
                fixed = fixed.where(~hour_only, fixed + ":00")
            if spaced.any() or hour_only.any():
                zoned = pd.concat([zoned[~odd], fixed])  # order does not matter: results go back by index
        aware = _to_datetime(zoned, utc=True, format="ISO8601")
        if aware.isna().any():  # lower-case t / z (RFC 3339 allows them); only the few that failed
            retry = zoned[aware.isna()].str.upper()
            aware[retry.index] = _to_datetime(retry, utc=True, format="ISO8601")
        out[aware.index] = aware
    naive = text[~has_zone]
    if len(naive):
        parsed_naive = _to_datetime(naive, format="ISO8601")
        _localize(parsed_naive, naive, timezone, label, out, why)


_DECIMAL_COMMA = r"([0-9]{2}:[0-9]{2}(?::[0-9]{2})?),([0-9])"
_WEEK_DATE = r"^(?P<year>[0-9]{4})-?W(?P<week>[0-9]{2})(?:-?(?P<day>[1-7]))?(?P<rest>(?:[Tt ].*)?)$"
_ORDINAL_DATE = r"^(?P<year>[0-9]{4})-(?P<day>[0-9]{3})(?P<rest>(?:[Tt ].*)?)$"


def _calendar_forms(text: pd.Series) -> pd.Series:
    """ISO 8601 forms pandas does not read, rewritten to the ones it does, by arrow kernels and
    numpy date arithmetic: a decimal comma (`...:47,5Z` -> `...:47.5Z`), week dates
    (`2023-W15-1T10:00Z`, `2023W151`) and ordinal dates (`2023-100T10:00Z`) to `YYYY-MM-DD...`.
    A week or day that does not exist in its year (`2023-W54`, `2023-366`) is left as written:
    the caller reports it unreadable."""
    import pyarrow.compute as pc

    values = arrow_text(text)
    comma = pc.fill_null(pc.match_substring(values, ","), False)
    if pc.any(comma).as_py():
        values = pc.replace_substring_regex(values, _DECIMAL_COMMA, r"\1.\2")
    week = pc.fill_null(pc.match_substring_regex(values, _WEEK_DATE), False).to_numpy(zero_copy_only=False)
    ordinal = pc.fill_null(pc.match_substring_regex(values, _ORDINAL_DATE), False).to_numpy(zero_copy_only=False)
    if not (week.any() or ordinal.any() or pc.any(comma).as_py()):
        return text
    out = pd.Series(values, index=text.index, dtype=TEXT)
    for mask, pattern in ((week, _WEEK_DATE), (ordinal, _ORDINAL_DATE)):
        if not mask.any():
            continue
        parts = pc.extract_regex(pc.filter(values, mask), pattern)
        field = lambda name: pd.to_numeric(pd.Series(parts.field(name).to_pandas()), errors="coerce")  # noqa: E731
        year = field("year").to_numpy(dtype="int64")
        first = (year - 1970).astype("datetime64[Y]").astype("datetime64[D]")  # 1 January
        if pattern is _WEEK_DATE:
            day = field("day").fillna(1).to_numpy(dtype="int64")
            jan4 = first + 3
            monday = jan4 - (jan4.astype("int64") + 3) % 7  # 1970-01-01 was a Thursday
            dates = monday + (field("week").to_numpy(dtype="int64") - 1) * 7 + (day - 1)
            thursday = dates - (dates.astype("int64") + 3) % 7 + 3  # its week's Thursday is in the ISO year
            valid = thursday.astype("datetime64[Y]").astype("int64") + 1970 == year
        else:
            dates = first + field("day").to_numpy(dtype="int64") - 1
            valid = dates.astype("datetime64[Y]").astype("int64") + 1970 == year
        rewritten = pd.Series(np.datetime_as_string(dates, unit="D"), dtype=object) + pd.Series(
            parts.field("rest").to_pandas(), dtype=object
        ).fillna("")
        rows = out.index[mask]
        out[rows[valid]] = rewritten[valid].to_numpy()
    return out


def _parse_with_format(
    text: pd.Series, fmt: str, timezone: str, label: str, out: pd.Series, why: pd.Series
) -> None:
    """Text in the strptime `fmt`; the values that do not match it are retried as ISO 8601 (any
    zone) and as the format's text followed by Z or an offset (how a DST-ambiguous local time is
    made exact)."""
    # with an offset in the format, rows may differ in offset (summer/winter): convert to UTC
    zoned_format = "%z" in fmt or "%Z" in fmt
    parsed = _to_datetime(text, format=fmt, utc=zoned_format)
    if zoned_format:
        ok = parsed.dropna()
        out[ok.index] = ok
    else:
        _localize(parsed, text, timezone, label, out, why)
    failed = text[parsed.isna()]
    if failed.empty:
        return
    iso = failed.str.contains(_ISO_DATE, regex=True)
    if iso.any():
        _parse_automatic(failed[iso], timezone, label, out, why)
    rest = failed[~iso]
    if len(rest) and not zoned_format:
        _parse_format_with_offset(rest, fmt, out)


def _parse_format_with_offset(text: pd.Series, fmt: str, out: pd.Series) -> None:
    """`<text in fmt> +HH:MM` (or +HHMM, +HH, Z): the part before the offset read with the format,
    then the offset applied. Only for the few values that did not match the format alone."""
    import pyarrow.compute as pc

    # arrow's RE2 kernels: linear time (Python's re is quadratic here on a long run of blanks)
    values = arrow_text(text)
    found = pc.fill_null(pc.match_substring_regex(values, _TRAILING_OFFSET), False).to_numpy(zero_copy_only=False)
    if not found.any():
        return
    groups = pc.extract_regex(pc.filter(values, found), _TRAILING_OFFSET_NAMED)
    parts = pd.DataFrame(
        {i: pd.Series(groups.field(name).to_pandas(), dtype=object).to_numpy() for i, name in enumerate("bzshm")},
        index=text.index[found],
    )
    base = _to_datetime(parts[0], format=fmt)
    hours = pd.to_numeric(parts[3], errors="coerce").fillna(0)
    minutes = pd.to_numeric(parts[4], errors="coerce").fillna(0)
    sign = np.where(parts[2] == "-", -1, 1)
    offset = pd.to_timedelta(sign * (hours * 60 + minutes), unit="min")
    valid = base.notna() & (hours <= 23) & (minutes <= 59)
    if not valid.any():
        return
    utc = (base[valid] - offset[valid]).dt.tz_localize("UTC")
    out[utc.index] = utc


def _localize(
    parsed: pd.Series, text: pd.Series, timezone: str, label: str, out: pd.Series, why: pd.Series
) -> None:
    """Read naive date-times in `timezone`; DST gaps and overlaps are reasons, never shifts."""
    ok = parsed.dropna()
    if ok.empty:
        return
    local = ok.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    out[local.index] = local.dt.tz_convert("UTC")
    lost = local.isna()
    if lost.any():
        lost_values = ok[lost]
        earlier = lost_values.dt.tz_localize(
            timezone, ambiguous=np.ones(len(lost_values), dtype=bool), nonexistent="NaT"
        )
        gap = earlier.isna()
        src = text[lost_values.index]
        why[src[gap].index] = _why(
            src[gap], f"{label}:", f" does not exist in {timezone} (clocks went forward for DST); fix the time or give it with an offset"
        )
        twice = lost_values[~gap]
        if len(twice):
            first = _offsets(earlier[~gap])
            second = _offsets(twice.dt.tz_localize(timezone, ambiguous=np.zeros(len(twice), dtype=bool)))
            why[twice.index] = (
                _why(src[~gap], f"{label}:", f" is ambiguous in {timezone} (clocks went back for DST); give it with its offset: ")
                + first + " the first time, " + second + " the second"
            )


_FEW = 256  # DST rows of a chunk below which their reasons are written one by one (a Series costs more)


def _dst_reasons(naive: np.ndarray, texts: list[str], timezone: str, label: str) -> list[str]:
    """`_localize`'s reasons for a few naive local times (epoch seconds as if UTC) known to fall
    in a DST gap or overlap of `timezone`: the same text, without a pandas operation per phrase."""
    index = pd.DatetimeIndex(naive.astype("datetime64[s]"))
    first = index.tz_localize(timezone, ambiguous=np.ones(len(index), dtype=bool), nonexistent="NaT")
    second = index.tz_localize(timezone, ambiguous=np.zeros(len(index), dtype=bool), nonexistent="NaT")
    reasons = []
    for text, earlier, later in zip(texts, first, second):
        if pd.isna(earlier):
            reasons.append(f"{label}: '{cut(text)}' does not exist in {timezone} (clocks went forward for DST); "
                           "fix the time or give it with an offset")
        else:
            reasons.append(f"{label}: '{cut(text)}' is ambiguous in {timezone} (clocks went back for DST); give it "
                           f"with its offset: {_offset_text(earlier)} the first time, {_offset_text(later)} the second")
    return reasons


def _offset_text(moment: pd.Timestamp) -> str:
    text = moment.strftime("%z")
    return text[:3] + ":" + text[3:]


def _offsets(local: pd.Series) -> pd.Series:
    """The UTC offsets of zone-aware times as text such as +02:00 (used only for the few invalid rows)."""
    text = local.dt.strftime("%z")
    return text.str.slice(0, 3) + ":" + text.str.slice(3)


def format_utc(times: pd.Series) -> pd.Series:
    """UTC datetimes as `YYYY-MM-DDTHH:MM:SSZ` text (NaT stays NaN)."""
    seconds = times.dt.tz_convert("UTC").astype(UTC_DTYPE).array.asi8
    missing = times.isna().to_numpy()
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - numpy fallback without pyarrow
        text = np.char.add(np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s"), "Z")
        return pd.Series(text, index=times.index, dtype=TEXT).where(~missing)
    # The 20 ASCII bytes of each text written by numpy arithmetic, handed to arrow as one buffer.
    # (a string array over that buffer as it is: every value 20 bytes, a missing one null)
    n = len(seconds)
    text = _iso_bytes(np.where(missing, 0, seconds) if missing.any() else seconds)
    offsets = pa.py_buffer(np.arange(0, 20 * (n + 1), 20, dtype=np.int32))
    valid = pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None
    strings = pa.StringArray.from_buffers(n, offsets, pa.py_buffer(text), valid)
    return pd.Series(strings, index=times.index, dtype=TEXT)


def _iso_bytes(seconds: np.ndarray) -> np.ndarray:
    """`YYYY-MM-DDTHH:MM:SSZ` for each epoch second (years 0000-9999), as an (n, 20) uint8 array:
    the civil date by integer arithmetic, each two-digit field by a lookup of its two bytes."""
    days, in_day = np.divmod(seconds, 86400)
    year, month, day = _civil_from_days(days.astype(np.int32))  # days of the years 0000-9999 fit
    hour, rest = np.divmod(in_day.astype(np.int32), 3600)
    minute, second = np.divmod(rest, 60)
    out = np.empty((len(seconds), 20), dtype=np.uint8)
    out[:] = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
    fields = out.view(_FIELDS).ravel()  # each two-digit field of a row as one (unaligned) 16-bit number
    for name, values in zip(_FIELDS.names, (year // 100, year % 100, month, day, hour, minute, second)):
        fields[name] = _PAIRS[values]
    return out


_PAIRS = np.array([[48 + i // 10, 48 + i % 10] for i in range(100)], dtype=np.uint8).view("<u2").ravel()
_FIELDS = np.dtype({"names": ["C", "Y", "M", "D", "h", "m", "s"], "formats": ["<u2"] * 7,
                    "offsets": [0, 2, 5, 8, 11, 14, 17], "itemsize": 20})  # in YYYY-MM-DDTHH:MM:SSZ


def _civil_from_days(days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(year, month, day) of days since 1970-01-01, proleptic Gregorian: the inverse of
    `_days_from_civil`, on whole columns."""
    shifted = days + 719468
    era = shifted // 146097
    of_era = shifted - era * 146097
    year_of_era = (of_era - of_era // 1460 + of_era // 36524 - of_era // 146096) // 365
    of_year = of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    march_month = (5 * of_year + 2) // 153
    day = of_year - (153 * march_month + 2) // 5 + 1
    month = np.where(march_month < 10, march_month + 3, march_month - 9)
    return year_of_era + era * 400 + (month <= 2), month, day


def normalize_status(values: pd.Series, label: str = "status") -> tuple[pd.Series, pd.Series]:
    """Common spellings of success and failure, whatever their case; anything else is a reason."""
    out = map_values(values.str.lower(), STATUS_SYNONYMS)
    bad = values.notna() & out.isna()
    why = pd.Series(np.nan, index=values.index, dtype=object)
    if bad.any():
        why[bad] = _why(
            values[bad], f"{label}:", " is neither success nor failed; add a lookup to the status rule or a filter rule"
        )
    return out, why


def parse_instant(text: str) -> pd.Timestamp:
    """One date or date-time given on the command line (`--since`), read by the rules of the data
    with naive values in UTC; a year alone is its first day. ValueError when it is not a real
    date (empty, `nat`, `now`, out of range, ...)."""
    given = text
    text = text.strip()
    if len(text) == 4 and text.isdigit():
        text += "-01-01"
    times = None
    if text and not (text.isdigit() and len(text) < 9):  # an empty shell variable; not an epoch number
        times, _ = parse_datetimes(pd.Series([text], dtype=TEXT))
    if times is None or pd.isna(times.iloc[0]):
        raise ValueError(
            f"not a date: {given!r}; use YYYY-MM-DD or an ISO 8601 date-time such as 2023-04-10T08:00:00Z "
            "(UTC unless it has an offset), in the years 1900-2199"
        )
    return times.iloc[0]

