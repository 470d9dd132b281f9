-- KEYS[1] the new object key, KEYS[2..] its index keys (distinct).
-- ARGV: payload, version, max_age_ms, last_usage_ms, index keys as a JSON array.
local object = KEYS[1]
for i = 2, #KEYS do
  local older = redis.call('GET', KEYS[i])
  if older and older ~= object then remove_object(older) end
end
local max_age, last_usage = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local left = remaining(now, now, now, max_age, last_usage)
redis.call('DEL', object)
redis.call('HSET', object, 'v', ARGV[1], 'ver', ARGV[2], 'k', ARGV[5], 'c', now, 'u', now)
if left ~= nil then redis.call('PEXPIRE', object, left) end
for i = 2, #KEYS do
  if left ~= nil then
    redis.call('SET', KEYS[i], object, 'PX', left)
  else
    redis.call('SET', KEYS[i], object)
  end
end
return 1
