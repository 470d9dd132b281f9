-- KEYS[1] an index key of this release that a read-through missed.
-- ARGV: prefix, tag, lease_ms, token, max_age_ms, last_usage_ms.
-- Checks the key once more and, when it holds no live object, leases it: returns {'hit',
-- the copy or body} when the object is there (filled meanwhile); {'held', ms left} when
-- another read-through holds the lease; {'granted'} when this one now does (the lease key
-- <release prefix>l:<suffix> holds <token>|<ms taken> for lease_ms).
local prefix, tag, lease_ms, token = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local max_age, last_usage = tonumber(ARGV[5]), tonumber(ARGV[6])
local own = prefix .. tag .. ':'
local now = now_ms()
local v, kind = read(KEYS[1])
if kind == 'P' then
  v, kind = read(own .. 'o:' .. id_of(v, kind))
end
if (kind == 'I' or kind == 'B') and not expired(v, now, max_age, last_usage) then
  return { 'hit', v }
end
local lease = own .. 'l:' .. string.sub(KEYS[1], #own + 1)
local taken = redis.call('SET', lease, token .. '|' .. string.format('%013d', now), 'NX', 'PX',
  lease_ms)
if taken then
  return { 'granted' }
end
return { 'held', redis.call('PTTL', lease) }
