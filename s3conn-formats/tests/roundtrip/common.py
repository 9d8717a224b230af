"""Shared by the round-trip scripts: the dataset, and how values are compared.

Values are compared in a canonical form chosen by the type of the column in the truth
table, so that a value that a format can only carry as text (a timestamp in CSV, a struct
in CSV as JSON) still compares equal to the typed original when it means the same thing.
"""
import datetime as dt
import json
from decimal import Decimal

import pyarrow as pa

NAMES = ["Zoë", "Ana \"the\" first", "Björn, Jr.", "李雷", "Olu\nline two", "Émile 🚀", "tab\there", "x"]


def truth_table(rows):
    """The dataset: nulls, unicode, nested values, zoned and naive timestamps, decimals,
    long strings."""
    utc = dt.timezone.utc
    base = dt.datetime(2024, 11, 27, 9, 30, 15, 123456, tzinfo=utc)
    data = {
        "id": [], "name": [], "long_text": [], "amount": [], "score": [], "flag": [],
        "born": [], "at": [], "local_at": [], "props": [], "tags": [],
    }
    for i in range(rows):
        data["id"].append(i * 1_000_003 - 7)
        data["name"].append(None if i % 11 == 3 else f"{NAMES[i % len(NAMES)]} #{i}")
        data["long_text"].append(("ω≈" + "lorem ipsum, \"dolor\" " * 6000)[: 100_000 + i] if i % 97 == 5 else f"short {i}")
        data["amount"].append(None if i % 7 == 0 else Decimal(i * 37 - 5000) / Decimal(10_000) + Decimal("123456.7"))
        data["score"].append(None if i % 13 == 0 else (i - 250) / 8.0)
        data["flag"].append(None if i % 17 == 0 else i % 2 == 0)
        data["born"].append(None if i % 19 == 0 else dt.date(1970, 1, 1) + dt.timedelta(days=i * 37))
        data["at"].append(None if i % 23 == 0 else base + dt.timedelta(seconds=i * 3607, microseconds=i))
        data["local_at"].append(None if i % 29 == 0 else (base + dt.timedelta(hours=i)).replace(tzinfo=None))
        data["props"].append(None if i % 31 == 0 else {"page": f"/p/{i % 50}", "n": None if i % 3 == 0 else i})
        data["tags"].append(None if i % 37 == 0 else (["a", "b,c", "ü"] if i % 2 else []))
    schema = pa.schema([
        ("id", pa.int64()),
        ("name", pa.string()),
        ("long_text", pa.string()),
        ("amount", pa.decimal128(18, 4)),
        ("score", pa.float64()),
        ("flag", pa.bool_()),
        ("born", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("local_at", pa.timestamp("us")),
        ("props", pa.struct([("page", pa.string()), ("n", pa.int64())])),
        ("tags", pa.list_(pa.string())),
    ])
    return pa.table(data, schema=schema)


def _parse_time(v):
    if isinstance(v, dt.datetime):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return dt.datetime.fromtimestamp(v / 1_000_000, tz=dt.timezone.utc)
    s = str(v).strip().replace(" ", "T", 1)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    return dt.datetime.fromisoformat(s)


def canon(value, typ):
    """`value` (as any reader gives it: typed, or text) in the canonical form of `typ`."""
    if value is None:
        return None
    if isinstance(value, str) and value == "" and not pa.types.is_string(typ):
        return None
    if pa.types.is_boolean(typ):
        if isinstance(value, bool):
            return value
        return str(value).strip().lower() in ("true", "1")
    if pa.types.is_integer(typ):
        return int(value)
    if pa.types.is_floating(typ):
        return float(value)
    if pa.types.is_decimal(typ):
        if isinstance(value, float):
            value = repr(value)
        return Decimal(str(value)).normalize()
    if pa.types.is_date(typ):
        if isinstance(value, dt.datetime):
            return value.date().isoformat()
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, int):
            return (dt.date(1970, 1, 1) + dt.timedelta(days=value)).isoformat()
        return str(value)[:10]
    if pa.types.is_timestamp(typ):
        t = _parse_time(value)
        if typ.tz is not None:
            if t.tzinfo is None:
                t = t.replace(tzinfo=dt.timezone.utc)
            delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
            return delta // dt.timedelta(microseconds=1)
        if t.tzinfo is not None:
            t = t.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return t.isoformat()
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return str(value)
    if pa.types.is_struct(typ):
        if isinstance(value, str):
            value = json.loads(value)
        return {typ.field(k).name: canon(value.get(typ.field(k).name), typ.field(k).type) for k in range(typ.num_fields)}
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        if isinstance(value, str):
            value = json.loads(value)
        return [canon(x, typ.value_type) for x in value]
    raise TypeError(f"no canonical form for {typ}")


def compare(truth, rows, label, problems):
    """Compare rows (a list of dicts) with the truth table, column by column."""
    expected = truth.to_pylist()
    if len(rows) != len(expected):
        problems.append(f"{label}: {len(rows)} rows, expected {len(expected)}")
        return
    for field in truth.schema:
        for i, (want, got) in enumerate(zip(expected, rows)):
            if field.name not in got:
                problems.append(f"{label}: no column {field.name}")
                break
            a = canon(want[field.name], field.type)
            try:
                b = canon(got[field.name], field.type)
            except Exception as e:  # a value the reader gave that does not parse
                problems.append(f"{label}: row {i} column {field.name}: {got[field.name]!r}: {e}")
                break
            if a != b:
                problems.append(f"{label}: row {i} column {field.name}: expected {str(a)[:120]!r}, got {str(b)[:120]!r}")
                break
