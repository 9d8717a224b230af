"""Write the truth table, and the same data in every format and codec with independent
writers (pyarrow, fastavro, the standard library), for s3conn to read.

usage: generate.py DIR ROWS
"""
import bz2
import datetime as dt
import gzip
import json
import lzma
import os
import sys
import zlib
from decimal import Decimal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from backports import zstd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import truth_table  # noqa: E402

out = sys.argv[1]
rows = int(sys.argv[2])
tools = os.path.join(out, "tools")
os.makedirs(tools, exist_ok=True)
truth = truth_table(rows)
pq.write_table(truth, os.path.join(out, "truth.parquet"))
empty = truth.slice(0, 0)

COMPRESS = {
    "none": ("", lambda b: b),
    "gzip": (".gz", lambda b: gzip.compress(b)),
    "zstd": (".zst", lambda b: zstd.compress(b)),
    "bzip2": (".bz2", lambda b: bz2.compress(b)),
    "xz": (".xz", lambda b: lzma.compress(b, format=lzma.FORMAT_XZ)),
    "deflate": (".zz", lambda b: zlib.compress(b)),
}
written = []


def put(name, data, fmt, codec, n):
    path = os.path.join(tools, name)
    with open(path, "wb") as f:
        f.write(data)
    written.append({"path": path, "format": fmt, "codec": codec, "rows": n})


# Parquet, every codec pyarrow writes.
for codec in ["none", "snappy", "gzip", "lz4", "zstd", "brotli"]:
    path = os.path.join(tools, f"parquet-{codec}.parquet")
    pq.write_table(truth, path, compression=codec)
    written.append({"path": path, "format": "parquet", "codec": codec, "rows": rows})
path = os.path.join(tools, "parquet-empty.parquet")
pq.write_table(empty, path)
written.append({"path": path, "format": "parquet", "codec": "empty", "rows": 0})

# Avro, every codec fastavro writes.
try:
    import fastavro

    def opt(t):
        return ["null", t]

    avro_schema = fastavro.parse_schema({
        "type": "record", "name": "Truth", "fields": [
            {"name": "id", "type": "long"},
            {"name": "name", "type": opt("string")},
            {"name": "long_text", "type": "string"},
            {"name": "amount", "type": opt({"type": "bytes", "logicalType": "decimal", "precision": 18, "scale": 4})},
            {"name": "score", "type": opt("double")},
            {"name": "flag", "type": opt("boolean")},
            {"name": "born", "type": opt({"type": "int", "logicalType": "date"})},
            {"name": "at", "type": opt({"type": "long", "logicalType": "timestamp-micros"})},
            {"name": "local_at", "type": opt({"type": "long", "logicalType": "local-timestamp-micros"})},
            {"name": "props", "type": opt({"type": "record", "name": "Props", "fields": [
                {"name": "page", "type": opt("string")},
                {"name": "n", "type": opt("long")},
            ]})},
            {"name": "tags", "type": opt({"type": "array", "items": "string"})},
        ],
    })
    records = truth.to_pylist()
    for codec in ["null", "deflate", "bzip2", "xz", "zstandard", "snappy"]:
        path = os.path.join(tools, f"avro-{codec}.avro")
        with open(path, "wb") as f:
            fastavro.writer(f, avro_schema, records, codec=codec)
        written.append({"path": path, "format": "avro", "codec": codec, "rows": rows})
    path = os.path.join(tools, "avro-empty.avro")
    with open(path, "wb") as f:
        fastavro.writer(f, avro_schema, [])
    written.append({"path": path, "format": "avro", "codec": "empty", "rows": 0})
except ImportError:
    pass


def json_value(v):
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [json_value(x) for x in v]
    return v


records = [{k: json_value(v) for k, v in r.items()} for r in truth.to_pylist()]
ndjson = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
array = json.dumps(records, ensure_ascii=False, indent=1).encode()

# CSV: nested values as JSON text (CSV has no nesting), written by pyarrow.
flat = truth
for name in ["props", "tags"]:
    column = [None if v is None else json.dumps(json_value(v), ensure_ascii=False) for v in truth[name].to_pylist()]
    flat = flat.set_column(flat.schema.get_field_index(name), name, pa.array(column, pa.string()))
sink = pa.BufferOutputStream()
pacsv.write_csv(flat, sink)
csv_bytes = sink.getvalue().to_pybytes()
sink = pa.BufferOutputStream()
pacsv.write_csv(flat.slice(0, 0), sink)
csv_header_only = sink.getvalue().to_pybytes()

for codec, (ext, compress) in COMPRESS.items():
    put(f"ndjson-{codec}.jsonl{ext}", compress(ndjson), "ndjson", codec, rows)
    put(f"json-{codec}.json{ext}", compress(array), "json", codec, rows)
    put(f"csv-{codec}.csv{ext}", compress(csv_bytes), "csv", codec, rows)
put("ndjson-empty.jsonl", b"", "ndjson", "empty", 0)
put("json-empty.json", b"[]", "json", "empty", 0)
put("csv-header-only.csv", csv_header_only, "csv", "header-only", 0)
put("csv-empty.csv", b"", "csv", "empty", 0)

with open(os.path.join(out, "tools.json"), "w") as f:
    json.dump(written, f)
print(json.dumps({"truth_rows": rows, "files": len(written)}))
