"""Vectorized normalization of values: date-times to UTC, status spellings.

Every function takes a Series of text (missing = NaN) and returns the normalized Series plus a
Series of reasons (text where a value is present but unusable, NaN elsewhere), so the planner can
report each invalid row with why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

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


def map_values(values: pd.Series, table: dict[str, str]) -> pd.Series:
    """values.map(table) by arrow kernels: each value's position in the table's keys, then a take
    of the outputs (a value not in the table, or missing, gives missing)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    keys = pa.array(list(table), type=pa.string())
    outputs = pa.array(list(table.values()), type=pa.string())
    positions = pc.index_in(pa.array(values.astype(TEXT).array, type=pa.string()), value_set=keys)
    return pd.Series(pc.take(outputs, positions), index=values.index, dtype=TEXT)


_EPOCH = r"-?[0-9]+(?:\.[0-9]+)?"
_AWARE = r"[T ][0-9].*(?:Z|z|[+-][0-9]{2}:?[0-9]{2})$"
_SPACE_BEFORE_OFFSET = r"[ \t]+([+-][0-9]{2}:?[0-9]{2})$"
MS_THRESHOLD = 100_000_000_000  # epoch numbers at or above this are milliseconds (1e11 s is year 5138)
EPOCH_MIN, EPOCH_MAX = -2_208_988_800, 7_258_118_399  # epoch seconds of 1900-01-01 and 2199-12-31T23:59:59


def _empty_like(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    return (
        pd.Series(pd.NaT, index=values.index, dtype=UTC_DTYPE),
        pd.Series(np.nan, index=values.index, dtype=object),
    )


def _why(values: pd.Series, what: str, hint: str) -> pd.Series:
    return what + " '" + values.astype(object).astype(str) + "'" + hint


def parse_datetimes(
    values: pd.Series,
    *,
    timezone: str = "UTC",
    fmt: str | None = None,
    unit: str | None = None,
    label: str = "timestamp",
) -> tuple[pd.Series, pd.Series]:
    """Parse text date-times to UTC (second precision).

    Accepted: ISO 8601 with Z or an offset; naive date-times, read in `timezone` (a time that does
    not exist or is ambiguous there because of a DST change is invalid, never shifted); epoch
    seconds or milliseconds (by `unit`, else by magnitude); or text in the strptime `fmt`.
    """
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
        num = pd.to_numeric(numbers, errors="coerce").astype("float64")
        millis = (num.abs() >= MS_THRESHOLD) if unit is None else pd.Series(unit == "ms", index=num.index)
        seconds = np.floor(num.where(~millis, num / 1000))
        # far outside any deployment history (and pandas' range): a reason, not an overflow error
        in_range = seconds.between(EPOCH_MIN, EPOCH_MAX)
        good = seconds[in_range]
        if len(good):
            out[good.index] = pd.to_datetime(good.to_numpy(dtype="int64"), unit="s", utc=True)
        if not in_range.all():
            far = numbers[~in_range]
            why[far.index] = _why(
                far, f"{label}: epoch number", " is outside the years 1900-2199; check the unit (s or ms)"
            )
    text = present[~is_number]
    if unit and len(text):
        why[text.index] = _why(text, f"{label}: expected epoch {'milliseconds' if unit == 'ms' else 'seconds'}, got", "")
        text = text.iloc[0:0]
    if len(text):
        if fmt:
            # with an offset in the format, rows may differ in offset (summer/winter): convert to UTC
            parsed = pd.to_datetime(text, format=fmt, errors="coerce", utc="%z" in fmt or "%Z" in fmt)
            hint = f" (format {fmt!r})"
        else:
            parsed = None
            hint = "; give timestamp format: in the mapping (e.g. \"%d.%m.%Y %H:%M\")"
        if parsed is not None and getattr(parsed.dt, "tz", None) is not None:
            aware = parsed.dt.tz_convert("UTC")
            out[aware.index] = aware.dt.floor("s")
        elif parsed is not None:
            _localize(parsed, text, timezone, label, out, why)
        else:
            cleaned = text
            has_zone = text.str.contains(_AWARE, regex=True)
            if has_zone.any():
                zoned = text[has_zone]
                spaced = zoned.str.contains(r"[ \t][+-][0-9]{2}:?[0-9]{2}$", regex=True)
                if spaced.any():  # rare: "2021-04-28 21:50:00 +0200"; replace() with a group is per-row Python
                    cleaned = text.copy()
                    fixed = zoned[spaced]
                    cleaned[fixed.index] = fixed.str.replace(_SPACE_BEFORE_OFFSET, r"\1", regex=True)
                aware = pd.to_datetime(cleaned[has_zone], utc=True, format="ISO8601", errors="coerce")
                if aware.isna().any():  # lower-case t / z (RFC 3339 allows them); only the few that failed
                    retry = cleaned[has_zone][aware.isna()].str.upper()
                    aware[retry.index] = pd.to_datetime(retry, utc=True, format="ISO8601", errors="coerce")
                out[aware.index] = aware.dt.floor("s")
            naive = cleaned[~has_zone]
            if len(naive):
                parsed_naive = pd.to_datetime(naive, format="ISO8601", errors="coerce")
                _localize(parsed_naive, naive, timezone, label, out, why)
        unreadable = out[text.index].isna() & why[text.index].isna()
        if unreadable.any():
            bad = text[unreadable]
            why[bad.index] = _why(bad, f"{label}: cannot read", f" as a date-time{hint}")
    return out, why


def _localize(
    parsed: pd.Series, text: pd.Series, timezone: str, label: str, out: pd.Series, why: pd.Series
) -> None:
    """Read naive date-times in `timezone`; DST gaps and overlaps are reasons, never shifts."""
    ok = parsed.dropna()
    if ok.empty:
        return
    local = ok.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    out[local.index] = local.dt.tz_convert("UTC").dt.floor("s")
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
    text = _iso_bytes(np.where(missing, 0, seconds))
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(20), len(seconds), [None, pa.py_buffer(text)])
    return pd.Series(fixed.cast(pa.binary()).cast(pa.string()), index=times.index, dtype=TEXT).where(~missing)


def _iso_bytes(seconds: np.ndarray) -> np.ndarray:
    """`YYYY-MM-DDTHH:MM:SSZ` for each epoch second (years 0000-9999), as an (n, 20) uint8 array."""
    stamps = seconds.astype("datetime64[s]")
    days = stamps.astype("datetime64[D]")
    years = days.astype("datetime64[Y]")
    months = days.astype("datetime64[M]")
    in_day = seconds - days.astype("datetime64[s]").astype("int64")
    fields = (
        (years.astype("int64") + 1970, 4),
        ((months - years).astype("int64") + 1, 2),
        ((days - months).astype("int64") + 1, 2),
        (in_day // 3600, 2),
        (in_day // 60 % 60, 2),
        (in_day % 60, 2),
    )
    out = np.empty((len(seconds), 20), dtype=np.uint8)
    out[:] = np.frombuffer(b"0000-00-00T00:00:00Z", dtype=np.uint8)
    column = 0
    for values, width in fields:
        for digit in range(width):
            out[:, column + digit] = 48 + values // 10 ** (width - 1 - digit) % 10
        column += width + 1
    return out


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
