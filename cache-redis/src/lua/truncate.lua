-- KEYS[1] any key of the cache's hash slot (routes the call to its node on a cluster).
-- ARGV: cursor, MATCH pattern, COUNT. One SCAN batch: unlinks the matching keys and returns
-- the next cursor ("0" when the scan is complete).
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[3]))
if #r[2] > 0 then
  redis.call('UNLINK', unpack(r[2]))
end
return r[1]
