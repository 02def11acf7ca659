from __future__ import annotations

from pathlib import Path

import pytest
from tests.pg._fakes import DEFAULT_ROUTES

from mdgate._routing.table import ExchangeRoute, RouteTable
from mdgate.plugins.pg_routes.cache import (
    ForeignCacheError,
    database_identity,
    decode_table,
    default_cache_path,
    encode_table,
    read_cache,
    write_cache,
)

TABLE = RouteTable.build(
    [*DEFAULT_ROUTES, ExchangeRoute("LSE", "yahoo", 3, False, False)],
    {("dhan", "NSE:RELIANCE"): "NSE_EQ:2885", ("yahoo", "NYSE:BRK.B"): "BRK-B"},
    "postgresql",
)


def test_encode_table_roundtrip_keeps_everything_but_source() -> None:
    back = decode_table(encode_table(TABLE, written_at=1), "cache:x")
    assert back.exchanges == TABLE.exchanges and back.codes == TABLE.codes
    assert back.source == "cache:x"


@pytest.mark.parametrize(
    "data",
    [
        b"{",
        b"[]",
        b'{"version": 2}',
        b'{"version": 1, "exchanges": [{}], "codes": []}',
        b'{"version": 1, "exchanges": [], "codes": [["a", "b"]]}',
    ],
)
def test_decode_table_malformed_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError, match="route cache"):
        decode_table(data, "cache:x")


def test_write_cache_atomic_replace_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "routes.json"
    write_cache(path, RouteTable.build(list(DEFAULT_ROUTES), {}, "postgresql"))
    write_cache(path, TABLE)
    table = read_cache(path)
    assert table.codes == TABLE.codes and table.source == f"cache:{path}"
    assert [p.name for p in path.parent.iterdir()] == ["routes.json"]


def test_default_cache_path_precedence(tmp_path: Path) -> None:
    assert default_cache_path("/etc/x.json", {"XDG_CACHE_HOME": "/c"}) == Path("/etc/x.json")
    assert default_cache_path("", {"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/mdgate/routes.json")
    assert default_cache_path("", {"HOME": "/h"}) == Path("/h/.cache/mdgate/routes.json")


def test_database_identity_is_host_port_name_never_user_or_password() -> None:
    a = database_identity("postgresql://alice:s3cret@DB.example:5433/routes", {})
    b = database_identity("host=db.example port=5433 dbname=routes user=bob password=other/#pw", {})
    assert a == b and a.name == "db.example:5433/routes" and len(a.key) == 16
    assert "s3cret" not in repr(a) and "alice" not in repr(a)
    assert database_identity("postgresql://alice@db.example:5433/other", {}).key != a.key
    assert database_identity("postgresql://alice@db.example:5434/routes", {}).key != a.key
    assert database_identity("postgresql://alice@db2.example:5433/routes", {}).key != a.key
    # libpq defaults fill what the DSN leaves out.
    env = {"PGHOST": "db.example", "PGPORT": "5433", "PGDATABASE": "routes"}
    assert database_identity("postgresql://", env) == a
    # An unparsable DSN is identified by its masked form only.
    bad = database_identity("postgresql://u:s3cret@[oops/x", {})
    assert "s3cret" not in bad.name and len(bad.key) == 16


def test_default_cache_path_one_file_per_database() -> None:
    key = database_identity("postgresql://db/x", {}).key
    path = default_cache_path("", {"XDG_CACHE_HOME": "/c"}, key)
    assert path == Path(f"/c/mdgate/routes-{key}.json")
    assert default_cache_path("/etc/x.json", {}, key) == Path("/etc/x.json")


def test_cache_remembers_its_database_and_refuses_another() -> None:
    mine = database_identity("postgresql://db:5432/a", {})
    other = database_identity("postgresql://db:5432/b", {})
    table = RouteTable.build(list(DEFAULT_ROUTES), {}, "postgresql", listed=["NSE:TCS"])
    data = encode_table(table, written_at=1, database=mine)
    back = decode_table(data, "cache:x", mine)
    assert back.exchanges == table.exchanges and back.listed == {"NSE:TCS"}
    with pytest.raises(ForeignCacheError, match=r"belongs to another database \(db:5432/a\), not db:5432/b"):
        decode_table(data, "cache:x", other)
    # A file that does not say which database wrote it is not trusted for any.
    with pytest.raises(ForeignCacheError, match="does not say which database"):
        decode_table(encode_table(table, written_at=1), "cache:x", mine)
