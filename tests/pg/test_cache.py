from __future__ import annotations

from pathlib import Path

import pytest

from mdgate.db.cache import (
    decode_table,
    default_cache_path,
    encode_table,
    read_cache,
    write_cache,
)
from mdgate.routing import DEFAULT_EXCHANGES, ExchangeRoute, RouteTable

TABLE = RouteTable.build(
    [*DEFAULT_EXCHANGES, ExchangeRoute("LSE", "yahoo", 3, False, False)],
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
    write_cache(path, RouteTable.build(list(DEFAULT_EXCHANGES), {}, "postgresql"))
    write_cache(path, TABLE)
    table = read_cache(path)
    assert table.codes == TABLE.codes and table.source == f"cache:{path}"
    assert [p.name for p in path.parent.iterdir()] == ["routes.json"]


def test_default_cache_path_precedence(tmp_path: Path) -> None:
    assert default_cache_path("/etc/x.json", {"XDG_CACHE_HOME": "/c"}) == Path("/etc/x.json")
    assert default_cache_path("", {"XDG_CACHE_HOME": "/c", "HOME": "/h"}) == Path("/c/mdgate/routes.json")
    assert default_cache_path("", {"HOME": "/h"}) == Path("/h/.cache/mdgate/routes.json")
