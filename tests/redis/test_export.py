"""``mdgate export`` against a throw-away redis-server: CSV and Parquet of stored ticks and bars."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from structlog.testing import capture_logs
from tests.redis.test_redis_store import FAST, running_store, wait_for

from mdgate._cli.context import CommandContext
from mdgate._cli.root import build_cli, invoke
from mdgate._config import RedisSettings
from mdgate._export import bar_pages, tick_pages
from mdgate._model import Bar, Tick
from mdgate.plugins.stores.redis_store import RedisStore
from mdgate.testing.redis import RedisServer

pytestmark = pytest.mark.integration

BASE = 1_700_000_040_000  # a minute boundary, long past: bars close at once
MIN = 60_000
AAPL, MSFT = "NASDAQ:AAPL", "NASDAQ:MSFT"


def tick(instrument: str, ts: int, price: float, **kw: Any) -> Tick:
    return Tick(instrument, price, ts, ts + 3, kw.pop("provider", "YF"), **kw)


def sample(instrument: str, n: int, start: int = BASE) -> list[Tick]:
    """n ticks a second apart, every third with all the optional fields, a few sharing a millisecond."""
    out = []
    for i in range(n):
        ts = start + (i - i % 4 if i % 10 == 9 else i) * 1000
        extra: dict[str, Any] = {}
        if i % 3 == 0:
            extra = {"size": i + 1, "volume": 1000 + i, "bid": 99.5 + i / 8, "ask": 100.5 + i / 8,
                     "bid_size": 3, "ask_size": 4, "open": 98.25, "high": 120.125, "low": 97.0,
                     "prev_close": 97.75, "oi": 12}
        out.append(tick(instrument, ts, round(100.0 + i * 0.37, 2), **extra))
    out.sort(key=lambda t: t.ts)
    return out




def store(url: str, ticks: list[Tick], bars: int = 0) -> None:
    """Write ``ticks`` through the RedisStore (as a gateway does); wait until stored (and ``bars`` bars)."""

    async def go() -> None:
        async with running_store(url) as st:
            st.write(ticks)
            await wait_for(lambda: st.status()["buffered"] == 0 and st.written >= len(ticks))
            await wait_for(lambda: st.bars_written >= bars)

    with capture_logs():  # not on the standard output the tests read
        anyio.run(go)


def stored(url: str, instrument: str, interval: str | None = None) -> list[Any]:
    """What the store answers for one unbounded read (GET /history's code)."""

    async def go() -> list[Any]:
        st = RedisStore(url, RedisSettings(), FAST)
        try:
            if interval is None:
                return list(await st.history(instrument, limit=1_000_000))
            return list(await st.bars(instrument, interval, limit=1_000_000))
        finally:
            await st.aclose()

    return anyio.run(go)


def context(environ: dict[str, str]) -> CommandContext:
    obj = CommandContext(environ)
    obj._logging = "test"  # the test process keeps its logging (no handler on a capture stream)
    return obj


def run_export(tmp_path: Path, argv: list[str], environ: dict[str, str]) -> int:
    config = tmp_path / "mdgate.toml"
    config.write_text("")
    with capture_logs():  # not on standard output, where the export may be written
        return invoke(build_cli(), ["export", *argv, "--config", str(config)], context(environ))


def env(server: RedisServer) -> dict[str, str]:
    return {"MDGATE_REDIS_URL": server.url}


def csv_ticks(text: str, kind: type[Tick | Bar] = Tick) -> list[Any]:
    reader = csv.DictReader(io.StringIO(text))
    assert tuple(reader.fieldnames or ()) == kind.__struct_fields__
    return [msgspec.convert({k: v for k, v in row.items() if v != ""}, kind, strict=False) for row in reader]


# ---------------------------------------------------------------- ticks


def test_export_csv_rows_equal_the_stored_ticks_read_page_by_page(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    aapl, msft = sample(AAPL, 45), sample(MSFT, 23, BASE + 500)
    store(redis_server.url, aapl + msft)
    monkeypatch.setattr("mdgate._export.PAGE_ROWS", 6)  # many pages, windows halved and grown
    out = tmp_path / "ticks.csv"
    assert run_export(tmp_path, ["nasdaq:aapl", MSFT, "-o", str(out)], env(redis_server)) == 0
    rows = csv_ticks(out.read_text())
    assert rows == aapl + msft  # instrument by instrument, each oldest first, every field as written
    assert rows == stored(redis_server.url, AAPL) + stored(redis_server.url, MSFT)
    assert not list(tmp_path.glob("*.part"))


def test_export_since_until_select_the_stored_time_range(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks = sample(AAPL, 40)
    store(redis_server.url, ticks)
    since, until = BASE + 7_000, BASE + 21_000
    code = run_export(tmp_path, [AAPL, "--since", str(since), "--until", "2023-11-14T22:14:21+00:00"],
                      env(redis_server))
    assert code == 0
    assert until == 1_700_000_061_000  # the ISO time above
    captured = capsys.readouterr()
    rows = csv_ticks(captured.out)
    assert rows == [t for t in ticks if since <= t.ts <= until]
    assert rows[0].ts == since and rows[-1].ts == until
    assert f"exported {len(rows)} ticks of 1 instrument(s) to standard output" in captured.err


async def test_tick_pages_partition_the_stream_with_bounded_pages(redis_server: RedisServer) -> None:
    year = 365 * 86_400_000
    ticks = (
        [tick(AAPL, BASE - 3 * year + i, 1.0 + i) for i in range(5)]  # long before
        + [tick(AAPL, BASE, 10.0 + i) for i in range(20)]  # 20 in one millisecond: more than a page
        + [tick(AAPL, BASE + 10 + i * 7, 50.0 + i) for i in range(30)]
        + [tick(AAPL, BASE - 5_000, 99.0)]  # out of order: filed at its predecessor's time
        + [tick(AAPL, BASE + 2 * year + i * 86_400_000, 200.0 + i) for i in range(9)]  # sparse, later
    )
    async with running_store(redis_server.url) as st:
        st.write(ticks)
        await wait_for(lambda: st.status()["buffered"] == 0 and st.written == len(ticks))
        pages = [p async for p in tick_pages(st, AAPL, None, None, page=7)]
        whole = await st.history(AAPL, limit=1000)
        middle = [t async for p in tick_pages(st, AAPL, BASE, BASE + 100, page=4) for t in p]
        expected_middle = await st.history(AAPL, since_ms=BASE, until_ms=BASE + 100, limit=1000)
    assert [t for p in pages for t in p] == whole == ticks
    assert middle == expected_middle and len(middle) == 20 + 13
    # a page holds at most a page of rows, but for the millisecond that holds more
    assert max(len(p) for p in pages) == 20
    assert sorted(len(p) for p in pages)[-2] < 7


# ---------------------------------------------------------------- bars


def minute_ticks(instrument: str, start: int, minutes: int) -> list[Tick]:
    out, vol = [], 0
    for m in range(minutes):
        for k in range(3):
            vol += 10 * (m + 1)
            out.append(tick(instrument, start + m * MIN + k * 10_000, 100.0 + m + (k - 1) * 0.5, volume=vol))
    return out


def test_export_bars_csv_equal_the_stored_bars(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    start = BASE - BASE % (15 * MIN)
    store(redis_server.url, minute_ticks(AAPL, start, 31), bars=31)
    monkeypatch.setattr("mdgate._export.PAGE_ROWS", 4)
    for interval, count in (("1m", 31), ("5m", 7), ("15m", 3)):
        out = tmp_path / f"bars{interval}.csv"
        assert run_export(tmp_path, [AAPL, "--bars", interval, "-o", str(out)], env(redis_server)) == 0
        bars = csv_ticks(out.read_text(), Bar)
        assert bars == stored(redis_server.url, AAPL, interval)
        assert len(bars) == count
    out = tmp_path / "window.csv"
    argv = [AAPL, "--bars", "5m", "--since", str(start + 3 * MIN), "--until", str(start + 12 * MIN)]
    assert run_export(tmp_path, [*argv, "-o", str(out)], env(redis_server)) == 0
    assert [b.start for b in csv_ticks(out.read_text(), Bar)] == [start + 5 * MIN, start + 10 * MIN]


async def test_bar_pages_read_a_long_gap_in_few_reads(redis_server: RedisServer) -> None:
    ticks = minute_ticks(AAPL, BASE, 3) + minute_ticks(AAPL, BASE + 400 * 86_400_000, 3)
    async with running_store(redis_server.url) as st:
        st.write(ticks)
        await wait_for(lambda: st.bars_written == 6)
        reads = 0
        real = st.bars

        async def counted(*args: Any, **kwargs: Any) -> list[Bar]:
            nonlocal reads
            reads += 1
            return await real(*args, **kwargs)

        st.bars = counted  # type: ignore[method-assign]
        pages = [p async for p in bar_pages(st, AAPL, "1m", None, None, page=2)]
        st.bars = real  # type: ignore[method-assign]
        whole = await st.bars(AAPL, "1m", limit=100)
        # BASE is 4 minutes into a 5-minute interval: a window found by the search starts at its start
        five = [b async for p in bar_pages(st, AAPL, "5m", None, None, page=2) for b in p]
        whole_five = await st.bars(AAPL, "5m", limit=100)
    assert [b for p in pages for b in p] == whole and len(whole) == 6
    assert reads < 200  # binary searches over the gaps, not a read per empty window (~300,000)
    assert five == whole_five and [b.start % (5 * MIN) for b in five] == [0] * 4
    assert five[0].start == BASE - 4 * MIN


# ---------------------------------------------------------------- parquet


def test_export_parquet_reads_back_equal(redis_server: RedisServer, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ticks = sample(AAPL, 30)
    store(redis_server.url, ticks + minute_ticks(MSFT, BASE, 4), bars=4)
    monkeypatch.setattr("mdgate._export.PAGE_ROWS", 8)
    out = tmp_path / "ticks.parquet"
    assert run_export(tmp_path, [AAPL, "--format", "parquet", "--output", str(out)], env(redis_server)) == 0
    table = pq.read_table(out)
    assert table.column_names == list(Tick.__struct_fields__)
    assert table.schema.field("price").type == pa.float64() and table.schema.field("ts").type == pa.int64()
    assert table.schema.field("size").nullable and not table.schema.field("instrument").nullable
    assert [Tick(**{k: v for k, v in row.items() if v is not None}) for row in table.to_pylist()] == ticks
    assert pq.ParquetFile(out).metadata.num_row_groups > 1  # written a page at a time
    bars_out = tmp_path / "bars.parquet"
    argv = [MSFT, "--bars", "1m", "--format", "parquet", "-o", str(bars_out)]
    assert run_export(tmp_path, argv, env(redis_server)) == 0
    assert [Bar(**row) for row in pq.read_table(bars_out).to_pylist()] == stored(redis_server.url, MSFT, "1m")


def test_export_parquet_to_stdout(redis_server: RedisServer, tmp_path: Path,
                                  capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    import pyarrow.parquet as pq

    ticks = sample(AAPL, 5)
    store(redis_server.url, ticks)
    assert run_export(tmp_path, [AAPL, "--format", "parquet"], env(redis_server)) == 0
    table = pq.read_table(io.BytesIO(capsysbinary.readouterr().out))
    assert table.column("price").to_pylist() == [t.price for t in ticks]


# ---------------------------------------------------------------- errors


def test_export_without_a_store_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_export(tmp_path, [AAPL], {}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mdgate: error: redis.url: no tick store configured")
    assert "MDGATE_REDIS_URL" in err[-1] and "--from-recording" in err[-1]


def test_export_bad_instrument_is_a_usage_error(redis_server: RedisServer, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert run_export(tmp_path, [AAPL, "AAPL"], env(redis_server)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("mdgate: error: Invalid value for INSTRUMENT:") and "EXCHANGE:SYMBOL" in err
    assert run_export(tmp_path, [AAPL, "--since", "yesterday"], env(redis_server)) == 2
    assert "--since/--until" in capsys.readouterr().err


def test_export_parquet_without_pyarrow_says_how_to_install(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    out = tmp_path / "x.parquet"
    assert run_export(tmp_path, [AAPL, "--format", "parquet", "-o", str(out)], env(redis_server)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['mdgate: error: --format parquet needs pyarrow, which is not installed: '
                   'pip install "mdgate[parquet]"']
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_export_with_redis_down_fails_and_leaves_no_file(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = redis_server.url
    redis_server.stop()
    out = tmp_path / "ticks.csv"
    assert run_export(tmp_path, [AAPL, "-o", str(out)], {"MDGATE_REDIS_URL": url}) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("mdgate: error: redis:")
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_export_from_recording_writes_nothing_to_the_configured_store(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.integration.test_export_recording import make_recording

    expected = make_recording(tmp_path / "rec")
    config = tmp_path / "mdgate.toml"
    config.write_text("")
    argv = ["export", "EXAMPLE:ACME", "EXAMPLE:BOLT", "--from-recording", str(tmp_path / "rec"),
            "--config", str(config)]
    environ = {"MDGATE_LOAD_PLUGINS": "example", **env(redis_server)}
    with capture_logs():  # not on standard output, where the export is written
        assert invoke(build_cli(), argv, context(environ)) == 0
    assert csv_ticks(capsys.readouterr().out) == expected

    async def keys() -> list[Any]:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(redis_server.url)
        try:
            return list(await r.keys("*"))
        finally:
            await r.aclose()

    assert anyio.run(keys) == []  # a replayed recording is not stored again
