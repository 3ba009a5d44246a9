"""Lua scripts of the Redis store; each runs atomically on the server (one EVALSHA).

Lua numbers are doubles: micro-dollar sums stay exact below 2^53 (about 9 billion dollars).
Amounts are passed to HINCRBY as the caller's decimal strings, never re-formatted by Lua
(which would print large numbers as "1e+15").
"""

# KEYS: spend hashes (one per scope and window).
# ARGV: micros, n_checks, then per check (key no, oldest live bucket, limit),
#       then n_adds, then per add (key no, current bucket, oldest live bucket, expiry ms).
# Returns 0 when reserved, else the 1-based number of the first check that does not fit.
RESERVE = """
local micros = tonumber(ARGV[1])
local n_checks = tonumber(ARGV[2])
local pos = 3
for i = 1, n_checks do
  local key = KEYS[tonumber(ARGV[pos])]
  local oldest = tonumber(ARGV[pos + 1])
  local limit = tonumber(ARGV[pos + 2])
  pos = pos + 3
  local flat = redis.call('HGETALL', key)
  local total = 0
  for j = 1, #flat, 2 do
    if tonumber(flat[j]) >= oldest then total = total + tonumber(flat[j + 1]) end
  end
  if total + micros > limit then return i end
end
local n_adds = tonumber(ARGV[pos])
pos = pos + 1
for i = 1, n_adds do
  local key = KEYS[tonumber(ARGV[pos])]
  local bucket = ARGV[pos + 1]
  local oldest = tonumber(ARGV[pos + 2])
  local expiry_ms = ARGV[pos + 3]
  pos = pos + 4
  redis.call('HINCRBY', key, bucket, ARGV[1])
  for _, field in ipairs(redis.call('HKEYS', key)) do
    if tonumber(field) < oldest then redis.call('HDEL', key, field) end
  end
  redis.call('PEXPIRE', key, expiry_ms)
end
return 0
"""

# KEYS: record key, index zset. ARGV: name, orjson value, ttl ms ("" = no expiry).
# The index score is the expiry on the server's clock, the same clock PX uses.
PUT_RECORD = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], '+inf', ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
return 1
"""

# KEYS: claim key. ARGV: holder, ttl ms. Free -> taken; already ours -> extended.
CLAIM = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: claim key. ARGV: holder. Compare-and-delete: only the holder releases.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
