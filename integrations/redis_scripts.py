"""The Redis ledger's server-side scripts (Lua, run atomically by Redis or Valkey).

One budget period lives in four keys sharing a hash tag (one cluster slot):
``<base>:acct`` a hash (``cap:<dim>``, ``spent:<dim>``, ``held:<dim>``, ``inflight``),
``<base>:leases`` a sorted set of lease ids by expiry (server time, ms),
``<base>:holds`` a hash of lease id -> the amounts it holds, and
``<base>:done`` a sorted set of settled lease ids (so a replayed settlement never
charges twice). Amounts are decimal integer strings (tokens, calls, USD in units of
1e-12): Redis adds them exactly with HINCRBY, and comparisons use two base-1e9 limbs
because Lua numbers are doubles.
"""

from __future__ import annotations

__all__ = ["READ", "RENEW", "RESERVE", "SETTLE"]

_COMMON = r"""
local DIMS = {'total_tokens', 'output_tokens', 'reasoning_tokens', 'usd', 'calls'}
local B = 1000000000
local acct, leases, holds, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]

local function big(s)
  s = s or '0'
  local n = #s
  if n <= 9 then return {0, tonumber(s)} end
  return {tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))}
end
local function add(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= B then return {hi + 1, lo - B} end
  return {hi, lo}
end
local function gt(a, b) return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2]) end

-- spent x5, held x5, in flight (the script runs whole on every call: literal names
-- rather than ones built by concatenation each time)
local FIELDS = {'spent:total_tokens', 'spent:output_tokens', 'spent:reasoning_tokens',
                'spent:usd', 'spent:calls', 'held:total_tokens', 'held:output_tokens',
                'held:reasoning_tokens', 'held:usd', 'held:calls', 'inflight'}
local FIELDS_AND_CAPS = {'spent:total_tokens', 'spent:output_tokens',
                         'spent:reasoning_tokens', 'spent:usd', 'spent:calls',
                         'held:total_tokens', 'held:output_tokens', 'held:reasoning_tokens',
                         'held:usd', 'held:calls', 'inflight', 'caps', 'cap:total_tokens',
                         'cap:output_tokens', 'cap:reasoning_tokens', 'cap:usd', 'cap:calls'}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function unhold(id)
  local h = redis.call('HGET', holds, id)
  if not h then return false end
  local i = 1
  for v in string.gmatch(h, '[^,]+') do
    if v ~= '0' then redis.call('HINCRBY', acct, FIELDS[5 + i], '-' .. v) end
    i = i + 1
  end
  redis.call('HDEL', holds, id)
  redis.call('ZREM', leases, id)
  redis.call('HINCRBY', acct, 'inflight', -1)
  return true
end

-- Leases past their expiry return what they held: their worker died or hung.
local function sweep(now)
  local dead = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(dead) do
    if not unhold(id) then redis.call('ZREM', leases, id) end
  end
end

-- spent x5, held x5, in flight: one HMGET
local function account()
  local values = redis.call('HMGET', acct, unpack(FIELDS))
  for i = 1, #FIELDS do values[i] = values[i] or '0' end
  return values
end

local function state(tag)
  local out = {tag}
  for _, v in ipairs(account()) do out[#out + 1] = v end
  return out
end

-- The five comma-separated amounts of one argument (one argument, not five: each
-- argument costs the client more to send than the server to split).
local function five(s)
  local out, i = {}, 1
  for k = 1, 4 do
    local j = string.find(s, ',', i, true)
    out[k] = string.sub(s, i, j - 1)
    i = j + 1
  end
  out[5] = string.sub(s, i)
  return out
end

local function expire(ttl)
  if ttl > 0 then
    for _, k in ipairs(KEYS) do redis.call('PEXPIRE', k, ttl) end
  end
end
"""

# KEYS: acct, leases, holds, done. ARGV: lease id, ttl ms, keys' time to live ms (0: for ever),
# the 5 caps ('' = none), the 5 needs (each comma-separated), the 5 unbounded flags
# ('1'/'0', e.g. '00000').
# Returns state('ok'|'gone'), {'refused', dim, state...} or
# {'conflict', dim, stored, given, open}.
RESERVE = (
    _COMMON
    + r"""
local id, ttl, at = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local caps, needs, unbounded = five(ARGV[4]), five(ARGV[5]), ARGV[6]
local now = now_ms()
sweep(now)
-- A resend of a reservation whose reply was lost holds nothing twice.
if redis.call('HEXISTS', holds, id) == 1 then return state('ok') end
-- Already released: its caller gave up on it (cancelled, reply lost) and the release it
-- journalled overtook it (another connection): it must hold nothing.
if redis.call('ZSCORE', done, id) then return state('gone') end
-- the account and the stored caps in one read
local now_values = redis.call('HMGET', acct, unpack(FIELDS_AND_CAPS))
for i = 1, #FIELDS do now_values[i] = now_values[i] or '0' end
local stored = #FIELDS + 1  -- 'caps', then cap:<dim> x5
local same = now_values[stored] ~= false
for i, d in ipairs(DIMS) do
  local have = now_values[stored + i] or ''
  if have ~= caps[i] then
    same = false
    if now_values[stored] and redis.call('ZCARD', leases) > 0 then
      return {'conflict', d, have, caps[i], tostring(redis.call('ZCARD', leases))}
    end
  end
end
if not same then
  for i, d in ipairs(DIMS) do
    if caps[i] == '' then redis.call('HDEL', acct, 'cap:' .. d)
    else redis.call('HSET', acct, 'cap:' .. d, caps[i]) end
  end
  redis.call('HSET', acct, 'caps', '1')
end
for i, d in ipairs(DIMS) do
  local cap = caps[i]
  if cap ~= '' then
    local used = add(big(now_values[i]), big(now_values[5 + i]))
    local c = big(cap)
    if gt(add(used, big(needs[i])), c)
       or (string.sub(unbounded, i, i) == '1' and not gt(c, used)) then
      local out = state('refused')
      table.insert(out, 2, d)
      return out
    end
  end
end
for i, d in ipairs(DIMS) do
  local v = needs[i]
  if v ~= '0' then redis.call('HINCRBY', acct, FIELDS[5 + i], v) end
end
redis.call('HINCRBY', acct, 'inflight', 1)
redis.call('HSET', holds, id, ARGV[5])
redis.call('ZADD', leases, now + ttl, id)
expire(at)
return state('ok')
"""
)

# KEYS: acct, leases, holds, done. ARGV: lease id, keys' time to live ms (0: for ever),
# keep-done ms, the 5 actual amounts (comma-separated). Returns state('ok'|'late'|'dup').
SETTLE = (
    _COMMON
    + r"""
local id, at, keep = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local actual = five(ARGV[4])
local now = now_ms()
if redis.call('ZSCORE', done, id) then return state('dup') end
local tag = 'ok'
if not unhold(id) then tag = 'late' end
for i, d in ipairs(DIMS) do
  local v = actual[i]
  if v ~= '0' then redis.call('HINCRBY', acct, FIELDS[i], v) end
end
redis.call('ZADD', done, now, id)
redis.call('ZREMRANGEBYSCORE', done, '-inf', now - keep)
sweep(now)
expire(at)
return state(tag)
"""
)

# KEYS: acct, leases, holds, done. ARGV: ttl ms, lease ids... Returns how many renewed.
RENEW = (
    _COMMON
    + r"""
local ttl = tonumber(ARGV[1])
local now = now_ms()
local n = 0
for i = 2, #ARGV do
  if redis.call('ZADD', leases, 'XX', 'CH', now + ttl, ARGV[i]) == 1 then n = n + 1 end
end
return n
"""
)

# KEYS: acct, leases, holds, done. Returns state('ok').
READ = (
    _COMMON
    + r"""
sweep(now_ms())
return state('ok')
"""
)
