"""Read what s3conn wrote with independent readers and compare it with the truth table,
value by value; and read what s3conn read (re-written as Parquet) the same way.

usage: check.py DIR
Prints a JSON summary: files checked per format, and every mismatch.
"""
import bz2
import gzip
import io
import json
import lzma
import os
import sys
import tempfile
import zlib
from decimal import Decimal

import duckdb
import pyarrow.parquet as pq
from backports import zstd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import compare  # noqa: E402

out = sys.argv[1]
truth = pq.read_table(os.path.join(out, "truth.parquet"))
problems = []
checked = {}


def decompress(path):
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        return gzip.decompress(data)
    if path.endswith(".zst"):
        return zstd.decompress(data)
    if path.endswith(".bz2"):
        return bz2.decompress(data)
    if path.endswith(".xz"):
        return lzma.decompress(data)
    if path.endswith(".zz"):
        return zlib.decompress(data)
    return data


def read(entry):
    fmt, path = entry["format"], entry["path"]
    if fmt == "parquet":
        return pq.read_table(path).to_pylist()
    if fmt == "avro":
        import fastavro
        with open(path, "rb") as f:
            return list(fastavro.reader(f))
    text = decompress(path)
    if fmt == "ndjson":
        return [json.loads(line, parse_float=Decimal) for line in text.decode().splitlines() if line.strip()]
    if fmt == "json":
        return json.loads(text.decode(), parse_float=Decimal)
    if fmt in ("csv", "tsv"):
        if not text:
            return []
        with tempfile.NamedTemporaryFile(suffix=".csv", delete=False) as f:
            f.write(text)
            name = f.name
        delim = "\\t" if fmt == "tsv" else ","
        rel = duckdb.sql(
            f"SELECT * FROM read_csv('{name}', all_varchar=true, header=true, delim=E'{delim}', "
            f"quote='\"', escape='\"', max_line_size=10000000, parallel=false)"
        )
        columns = [d[0] for d in rel.description]
        rows = [dict(zip(columns, r)) for r in rel.fetchall()]
        os.unlink(name)
        return rows
    raise ValueError(f"no reader for {fmt}")


def check(entries, kind):
    for entry in entries:
        label = f"{kind} {os.path.basename(entry['path'])}"
        try:
            rows = read(entry)
        except Exception as e:
            problems.append(f"{label}: the independent reader failed: {e}")
            continue
        key = f"{kind}:{entry['format']}"
        checked[key] = checked.get(key, 0) + 1
        if entry["rows"] == 0:
            if rows:
                problems.append(f"{label}: {len(rows)} rows, expected none")
            continue
        compare(truth, rows, label, problems)


with open(os.path.join(out, "ours.json")) as f:
    check(json.load(f), "written by s3conn")
with open(os.path.join(out, "read.json")) as f:
    check(json.load(f), "read by s3conn")
print(json.dumps({"checked": checked, "problems": problems}))
