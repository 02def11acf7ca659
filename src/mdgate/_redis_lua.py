"""
Server-side Lua scripts of the Redis tick store (Redis >= 7.0, Lua 5.1).

``WRITE_BATCH`` stores a whole batch in one ``EVALSHA``: every tick into its
instrument stream (explicit, writer-assigned IDs), every *new* tick into the
shared feed stream, the newest tick of each instrument into its ``:last``
hash (never rolled back by an older ``ts``), and closed one-minute bars.
A tick or bar whose ID is not above its stream's last ID is skipped and
counted as a duplicate: that is what makes a retried batch idempotent. Any
other error aborts the script with that error (the writer retries the batch).

Argument layout (as packed by :class:`mdgate._redis_codec.BatchPacker`)::

    KEYS[1]          the feed stream
    KEYS[3g-1..3g+1] group g (one per instrument): ticks, last hash, bars
    ARGV[1..3]       stream MAXLEN, feed MAXLEN ("0" = no feed), bars MAXLEN
    ARGV[4]          the ticks, one JSON text (msgspec):
                       [[g, "id", instrument, price, ts, ...], ...]
                     every tick field in model order, null when absent
    ARGV[5]          m, the number of bars, then m records of 9 arguments:
                       g, id, start, open, high, low, close, volume, count

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

from mdgate.model import TICK_FIELDS, Tick

__all__ = ["LAST_IDS", "LAST_IDS_SHA", "WRITE_BATCH", "WRITE_BATCH_SHA"]

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
local m = tonumber(ARGV[5])
local p = 6
local bars, bskipped = 0, 0
for _ = 1, m do
  local g = tonumber(ARGV[p])
  local r = pcall('XADD', KEYS[3 * g + 1], 'MAXLEN', '~', bmax, ARGV[p + 1],
    'start', ARGV[p + 2], 'open', ARGV[p + 3], 'high', ARGV[p + 4], 'low', ARGV[p + 5],
    'close', ARGV[p + 6], 'volume', ARGV[p + 7], 'count', ARGV[p + 8])
  if dup(r) then bskipped = bskipped + 1 else bars = bars + 1 end
  p = p + 9
end
return {added, skipped, bars, bskipped}
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


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()  # the SHA Redis computes, not security


WRITE_BATCH_SHA: Final = _sha(WRITE_BATCH)
LAST_IDS_SHA: Final = _sha(LAST_IDS)
