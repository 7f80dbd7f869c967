"""``polygon-sink athena-ddl``: the Athena DDL for the archive, one table per channel.

The DDL in ``docs/athena.md`` is this module's output for ``S3_BUCKET``/``S3_PREFIX`` (a
test keeps them equal). Tables read the JSON lines with the OpenX SerDe and use partition
projection on ``ingest_dt`` (``yyyy/MM/dd``) and ``hour``, so no crawler or repair is needed.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

__all__ = ["TABLES", "main", "render_ddl"]

_COMMON = ("channel string", "symbol string", "ingestTs string", "ev string", "sym string")
TABLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "AM": (
        "polygon_agg1m_raw",
        ("v bigint", "av bigint", "op double", "vw double", "o double", "c double",
         "h double", "l double", "a double", "z bigint", "s bigint", "e bigint",
         "otc boolean", "dv string", "dav string"),
    ),
    "FMV": ("polygon_fmv_raw", ("fmv double", "t bigint")),
    "T": (
        "polygon_trades_raw",
        ("i string", "x bigint", "p double", "s bigint", "ds string", "c array<int>",
         "t bigint", "pt bigint", "q bigint", "z bigint", "trfi bigint", "trft bigint"),
    ),
    "Q": (
        "polygon_quotes_raw",
        ("bx bigint", "ax bigint", "bp double", "ap double", "bs bigint", "`as` bigint",
         "c bigint", "i array<int>", "t bigint", "pt bigint", "q bigint", "z bigint"),
    ),
}  # fmt: skip


def _location(bucket: str, prefix: str, channel: str) -> str:
    path = "/".join(p for p in (bucket, prefix.strip("/"), f"channel={channel}") if p)
    return f"s3://{path}/"


def render_ddl(bucket: str, prefix: str, channel: str, start_date: str = "2024/01/01") -> str:
    """``CREATE EXTERNAL TABLE`` for one channel's folder."""
    table, columns = TABLES[channel]
    location = _location(bucket, prefix, channel)
    body = ",\n".join(f"  {c}" for c in (*_COMMON, *columns))
    return (
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {table} (\n{body}\n)\n"
        "PARTITIONED BY (\n  ingest_dt string,\n  hour string\n)\n"
        "ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'\n"
        "WITH SERDEPROPERTIES ('ignore.malformed.json'='true')\n"
        f"LOCATION '{location}'\n"
        "TBLPROPERTIES (\n"
        "  'projection.enabled'='true',\n"
        "  'projection.ingest_dt.type'='date',\n"
        f"  'projection.ingest_dt.range'='{start_date},NOW',\n"
        "  'projection.ingest_dt.format'='yyyy/MM/dd',\n"
        "  'projection.hour.type'='integer',\n"
        "  'projection.hour.range'='0,23',\n"
        "  'projection.hour.digits'='2',\n"
        f"  'storage.location.template'='{location}ingest_dt=${{ingest_dt}}/hour=${{hour}}/'\n"
        ");"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="polygon-sink athena-ddl",
        description="Print the Athena DDL (one table per channel) for an archive location.",
    )
    parser.add_argument("--bucket", required=True, help="S3_BUCKET")
    parser.add_argument("--prefix", default="", help="S3_PREFIX")
    parser.add_argument("--start-date", default="2024/01/01", help="first ingest_dt (yyyy/MM/dd)")
    parser.add_argument("--channel", choices=sorted(TABLES), action="append", help="repeatable")
    args = parser.parse_args(argv)
    for channel in args.channel or list(TABLES):
        print(render_ddl(args.bucket, args.prefix, channel, args.start_date) + "\n")
    return 0
