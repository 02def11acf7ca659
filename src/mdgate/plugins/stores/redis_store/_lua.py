"""
Server-side Lua scripts of the Redis tick store (Redis >= 7.0, Lua 5.1).

``WRITE_BATCH`` stores a whole batch in one ``EVALSHA``: every tick into its
instrument stream (explicit, writer-assigned IDs), every *new* tick into the
shared feed stream, the newest tick of each instrument into its ``:last``
hash (never rolled back by an older ``ts``), and closed one-minute bars.
A tick or bar whose ID is not above its stream's last ID is skipped and
counted as a duplicate: that is what makes a retried batch idempotent. Any
other error aborts the script with that error (the writer retries the batch).

Argument layout (as packed by :class:`mdgate.plugins.stores.redis_store._codec.BatchPacker`)::

    KEYS[1]          the feed stream
    KEYS[3g-1..3g+1] group g (one per instrument): ticks, last hash, bars
    ARGV[1..3]       stream MAXLEN, feed MAXLEN ("0" = no feed), bars MAXLEN
    ARGV[4]          the ticks, one JSON text (msgspec):
                       [[g, "id", instrument, price, ts, ...], ...]
                     every tick field in model order, null when absent
    ARGV[5]          m, the number of bars, then m records of 10 arguments:
                       g, id, start, open, high, low, close, volume, count,
                       rebuild ("1": recompute from the stored ticks of the minute)

The script splits the JSON text with Lua patterns rather than decoding it:
numbers keep their exact JSON text (no trip through Lua doubles, whose
formatting loses digits), strings lose their quotes. That is safe because
instrument names and provider codes cannot hold ``,"[]\\`` (the packer
leaves out any tick whose strings do).

Returns ``{ticks added, ticks skipped as duplicates, bars added, bars skipped}``.

``LAST_IDS`` returns the last generated ID of each stream in KEYS (``0-0``
when it does not exist): the writer seeds its ID counters with it the first
time it sees an instrument, so that a restarted gateway continues above what
its predecessor wrote.
"""

from __future__ import annotations

import hashlib
from typing import Final

from mdgate._model import TICK_FIELDS, Tick

__all__ = [
    "FEED_ADD",
    "FEED_ADD_SHA",
    "LAST_IDS",
    "LAST_IDS_SHA",
    "MERGE_BARS",
    "MERGE_BARS_SHA",
    "RAISE_FENCE",
    "WRITE_BATCH",
    "WRITE_BATCH_FENCED",
    "WRITE_BATCH_FENCED_SHA",
    "WRITE_BATCH_SHA",
]

_STR_FIELDS: Final = {i for i, f in enumerate(TICK_FIELDS, 1) if Tick.__annotations__[f] in ("str", str)}

WRITE_BATCH: Final = r"""
local smax, fmax, bmax = ARGV[1], ARGV[2], ARGV[3]
local F = {FIELDS}
local S = {STRINGS}
local feed = KEYS[1]
local use_feed = fmax ~= '0'
local gmatch, sub, tonumber, call, pcall = string.gmatch, string.sub, tonumber, redis.call, redis.pcall
local function dup(r)
  if type(r) == 'table' and r.err then
    if string.find(r.err, 'equal or smaller', 1, true) then return true end
    error(r)
  end
  return false
end
local added, skipped = 0, 0
local best_ts, best = {}, {}
for rec in gmatch(ARGV[4], '%[([^%[%]]+)%]') do
  local args, n, j, g, id, ts = {}, 0, -1, 0, '', 0
  for tok in gmatch(rec, '[^,]+') do
    if j == -1 then g = tonumber(tok)
    elseif j == 0 then id = sub(tok, 2, -2)
    elseif tok ~= 'null' then
      if S[j] then tok = sub(tok, 2, -2) elseif j == 3 then ts = tonumber(tok) end
      args[n + 1] = F[j]
      args[n + 2] = tok
      n = n + 2
    end
    j = j + 1
  end
  if dup(pcall('XADD', KEYS[3 * g - 1], 'MAXLEN', '~', smax, id, unpack(args))) then
    skipped = skipped + 1
  else
    added = added + 1
    if use_feed then call('XADD', feed, 'MAXLEN', '~', fmax, '*', unpack(args)) end
  end
  local bt = best_ts[g]
  if bt == nil or ts >= bt then
    best_ts[g] = ts
    best[g] = args
  end
end
for g, ts in pairs(best_ts) do
  local lk = KEYS[3 * g]
  local cur = tonumber(call('HGET', lk, 'ts'))
  if cur == nil or ts >= cur then
    call('DEL', lk)
    call('HSET', lk, unpack(best[g]))
  end
end
-- A bar flagged "rebuild" (the first minutes a gateway process sees of an
-- instrument: a predecessor may have stored ticks of the same minute) is
-- recomputed from every stored tick of its minute, with the same rules as
-- mdgate.plugins.stores.bars.BarBuilder; the volume baseline is the stored tick before it.
local function rebuild(tk, start, stop)
  local rows = call('XRANGE', tk, start, stop)
  local before = call('XREVRANGE', tk, string.format('%d', start - 1), '-', 'COUNT', 1)
  local last = nil
  if before[1] then
    local f = before[1][2]
    for k = 1, #f, 2 do if f[k] == 'volume' then last = tonumber(f[k + 1]) end end
  end
  local n, vol = 0, 0
  local o, h, l, c, hn, ln
  for _, row in ipairs(rows) do
    local f = row[2]
    local price, ts, v, sz
    for k = 1, #f, 2 do
      local name = f[k]
      if name == 'price' then price = f[k + 1]
      elseif name == 'ts' then ts = tonumber(f[k + 1])
      elseif name == 'volume' then v = tonumber(f[k + 1])
      elseif name == 'size' then sz = tonumber(f[k + 1]) end
    end
    -- a late tick filed in this minute (ts before it) counts nowhere, and
    -- does not move the volume baseline back
    if price and ts and ts >= start and ts <= stop then
      local d = 0
      if v then
        if last then d = (v >= last) and (v - last) or v end
        last = v
      elseif sz then
        d = sz
      end
      local pn = tonumber(price)
      if n == 0 then o, h, l, hn, ln = price, price, price, pn, pn end
      if pn > hn then h, hn = price, pn end
      if pn < ln then l, ln = price, pn end
      c = price
      vol = vol + d
      n = n + 1
    end
  end
  if n == 0 then return nil end
  return {o, h, l, c, string.format('%d', vol), tostring(n)}
end
local m = tonumber(ARGV[5])
local p = 6
local bars, bskipped = 0, 0
for _ = 1, m do
  local g = tonumber(ARGV[p])
  local start = ARGV[p + 2]
  local o, h, l, c, v, n = ARGV[p + 3], ARGV[p + 4], ARGV[p + 5], ARGV[p + 6],
    ARGV[p + 7], ARGV[p + 8]
  if ARGV[p + 9] == '1' then
    local b = rebuild(KEYS[3 * g - 1], tonumber(start), tonumber(start) + 59999)
    if b then o, h, l, c, v, n = b[1], b[2], b[3], b[4], b[5], b[6] end
  end
  local r = pcall('XADD', KEYS[3 * g + 1], 'MAXLEN', '~', bmax, ARGV[p + 1],
    'start', start, 'open', o, 'high', h, 'low', l, 'close', c, 'volume', v, 'count', n)
  if dup(r) then bskipped = bskipped + 1 else bars = bars + 1 end
  p = p + 10
end
return {added, skipped, bars, bskipped}
""".replace("{FIELDS}", "{" + ", ".join(f"'{f}'" for f in TICK_FIELDS) + "}").replace(
    "{STRINGS}", "{" + ", ".join(f"[{i}] = true" for i in sorted(_STR_FIELDS)) + "}"
)


def _fenced(script: str) -> str:
    """The fenced variant of ``WRITE_BATCH`` (each edit must apply exactly once)."""
    edits = (
        # the fence check first: refused groups write nothing
        ("local added, skipped = 0, 0\n", "local added, skipped = 0, 0\n" + _FENCE_PROLOGUE),
        ("  if dup(pcall('XADD', KEYS[3 * g - 1]",
         "  if refused[g] then\n    fenced = fenced + 1\n  elseif dup(pcall('XADD', KEYS[3 * g - 1]"),
        ("  if bt == nil or ts >= bt then", "  if not refused[g] and (bt == nil or ts >= bt) then"),
        ("for _ = 1, m do\n", "for _ = 1, m do\n  if not refused[tonumber(ARGV[p])] then\n"),
        ("  p = p + 10\nend\n", "  end\n  p = p + 10\nend\n"),
        ("return {added, skipped, bars, bskipped}", "return {added, skipped, bars, bskipped, fenced, out}"),
    )
    for old, new in edits:
        if script.count(old) != 1:
            raise AssertionError(f"WRITE_BATCH changed: cannot derive the fenced variant at {old!r}")
        script = script.replace(old, new)
    return script


#: Group g's fence key is ``KEYS[1 + 3G + g]`` (G groups), its token the g-th number of the last
#: ARGV (``"5,0,6"``; 0: unfenced). A stored token above the batch's refuses the group; else the
#: batch's token is stored. ``out``: the refused groups.
_FENCE_PROLOGUE: Final = r"""
local G = (#KEYS - 1) / 4
local refused, out, fenced, gi = {}, {}, 0, 0
for tok in string.gmatch(ARGV[#ARGV], '[^,]+') do
  gi = gi + 1
  local t = tonumber(tok)
  if t > 0 then
    local fk = KEYS[1 + 3 * G + gi]
    local cur = tonumber(redis.call('GET', fk))
    if cur ~= nil and cur > t then
      refused[gi] = true
      out[#out + 1] = gi
    elseif cur ~= t then
      redis.call('SET', fk, tok)
    end
  end
end
"""

#: ``WRITE_BATCH`` with fencing (used for batches holding a fenced instrument): as ``WRITE_BATCH``
#: plus one fence key per group after the group keys and the tokens as the last argument; returns
#: ``{added, skipped, bars, bars skipped, ticks fenced, {refused groups}}``.
WRITE_BATCH_FENCED: Final = _fenced(WRITE_BATCH)

#: ``FEED_ADD`` appends ticks to a feed partition (cluster mode), each ``(instrument, ID)`` once:
#: ``KEYS[1]`` the partition stream, ``KEYS[2]`` its hash instrument -> last instrument-stream ID
#: appended (same slot); ``ARGV[1]`` MAXLEN, ``ARGV[2]`` the ticks as in ``WRITE_BATCH``
#: (``[[0, "id", fields...], ...]``). A tick whose ID is not above its instrument's last appended
#: one is skipped (a retried batch, or another writer's copy). Returns ``{added, skipped}``.
FEED_ADD: Final = r"""
local F = {FIELDS}
local S = {STRINGS}
local gmatch, sub, tonumber, call = string.gmatch, string.sub, tonumber, redis.call
local function split(id)
  local a, b = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(a), tonumber(b)
end
local last, changed = {}, {}
local added, skipped = 0, 0
for rec in gmatch(ARGV[2], '%[([^%[%]]+)%]') do
  local args, n, j, id, inst = {}, 0, -1, '', ''
  for tok in gmatch(rec, '[^,]+') do
    if j == 0 then id = sub(tok, 2, -2)
    elseif j > 0 and tok ~= 'null' then
      if S[j] then tok = sub(tok, 2, -2) end
      if j == 1 then inst = tok end
      args[n + 1] = F[j]
      args[n + 2] = tok
      n = n + 2
    end
    j = j + 1
  end
  local cur = last[inst]
  if cur == nil then
    local v = call('HGET', KEYS[2], inst)
    if v then cur = {split(v)} else cur = {-1, -1} end
  end
  local ms, sq = split(id)
  if ms > cur[1] or (ms == cur[1] and sq > cur[2]) then
    call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(args))
    last[inst] = {ms, sq}
    changed[inst] = id
    added = added + 1
  else
    last[inst] = cur
    skipped = skipped + 1
  end
end
for inst, id in pairs(changed) do call('HSET', KEYS[2], inst, id) end
return {added, skipped}
""".replace("{FIELDS}", "{" + ", ".join(f"'{f}'" for f in TICK_FIELDS) + "}").replace(
    "{STRINGS}", "{" + ", ".join(f"[{i}] = true" for i in sorted(_STR_FIELDS)) + "}"
)

LAST_IDS: Final = r"""
local out = {}
for i, k in ipairs(KEYS) do
  local id = '0-0'
  local info = redis.pcall('XINFO', 'STREAM', k)
  if type(info) == 'table' and not info.err then
    for j = 1, #info, 2 do
      if info[j] == 'last-generated-id' then id = info[j + 1] break end
    end
  end
  out[i] = id
end
return out
"""


#: ``MERGE_BARS`` inserts backfilled one-minute bars into a ``:bars:1m`` stream, only for minutes
#: that have no entry yet (what is stored wins), keeping the stream ordered by minute. A stream
#: cannot take an entry below its last ID: the entries after the first new minute are read,
#: deleted, the last ID set back (``XSETID``) and everything re-added in order, then the last ID
#: restored if it was higher. Atomic, as every script. ``KEYS[1]``: the bar stream; ``ARGV[1]``:
#: its MAXLEN; then 7 arguments per bar, ordered by start, one bar per minute: start, open, high,
#: low, close, volume, count. Returns the number of bars added.
MERGE_BARS: Final = r"""
local key, bmax = KEYS[1], ARGV[1]
local n = (#ARGV - 1) / 7
if n < 1 then return 0 end
local call, tonumber = redis.call, tonumber
local function ms(id) return tonumber(string.match(id, '^(%d+)')) end
local function seq(id) return tonumber(string.match(id, '-(%d+)$')) end
local tail = call('XRANGE', key, ARGV[2] .. '-0', '+')
local have = {}
for _, e in ipairs(tail) do have[ms(e[1])] = true end
local new = {}
for i = 0, n - 1 do
  local p = 2 + 7 * i
  local start = tonumber(ARGV[p])
  if not have[start] then
    have[start] = true
    new[#new + 1] = p
  end
end
if #new == 0 then return 0 end
local function add(p)
  call('XADD', key, ARGV[p] .. '-0', 'start', ARGV[p], 'open', ARGV[p + 1], 'high', ARGV[p + 2],
    'low', ARGV[p + 3], 'close', ARGV[p + 4], 'volume', ARGV[p + 5], 'count', ARGV[p + 6])
end
local last = nil
local info = redis.pcall('XINFO', 'STREAM', key)
if type(info) == 'table' and not info.err then
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then last = info[j + 1] break end
  end
end
local first_new = tonumber(ARGV[new[1]])
local move = {}
for _, e in ipairs(tail) do
  if ms(e[1]) > first_new then move[#move + 1] = e end
end
if last ~= nil and (#move > 0 or ms(last) >= first_new) then
  for _, e in ipairs(move) do call('XDEL', key, e[1]) end
  local top = call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  call('XSETID', key, top[1] and top[1][1] or '0-0')
end
local i, k = 1, 1
while i <= #new or k <= #move do
  if k > #move or (i <= #new and tonumber(ARGV[new[i]]) < ms(move[k][1])) then
    add(new[i])
    i = i + 1
  else
    call('XADD', key, move[k][1], unpack(move[k][2]))
    k = k + 1
  end
end
if last ~= nil then
  local now = call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1][1]
  if ms(last) > ms(now) or (ms(last) == ms(now) and seq(last) > seq(now)) then
    call('XSETID', key, last)
  end
end
call('XTRIM', key, 'MAXLEN', '~', bmax)
return #new
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # the SHA Redis computes, not security


WRITE_BATCH_SHA: Final = _sha(WRITE_BATCH)
LAST_IDS_SHA: Final = _sha(LAST_IDS)
WRITE_BATCH_FENCED_SHA: Final = _sha(WRITE_BATCH_FENCED)
FEED_ADD_SHA: Final = _sha(FEED_ADD)
MERGE_BARS_SHA: Final = _sha(MERGE_BARS)

#: Raise an instrument's fence (``KEYS[1]``, ``mdgate:{I}:fence``) to the token ``ARGV[1]``, never
#: lowering it; returns the token it held (0: none). A new holder runs it as it takes a slot over.
RAISE_FENCE: Final = (
    "local cur = tonumber(redis.call('GET', KEYS[1])) or 0 "
    "if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end return cur"
)
