-- KEYS[1] index key. ARGV: version, max_age_ms, last_usage_ms.
-- Returns the payload, or false. Renews LastUsage (object and index keys) on a hit once a tenth
-- of LastUsage has passed since the last renewal, so hot objects cost no writes per hit.
local object = redis.call('GET', KEYS[1])
if not object then return false end
local f = redis.call('HMGET', object, 'v', 'ver', 'c', 'u')
if not f[1] then
  redis.call('DEL', KEYS[1]) -- points at an object that is gone
  return false
end
if f[2] ~= ARGV[1] then return false end -- another release's object: not ours to decode
local max_age, last_usage = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local left = remaining(tonumber(f[3]), tonumber(f[4]), now, max_age, last_usage)
if left ~= nil and left <= 0 then
  remove_object(object)
  return false
end
if last_usage > 0 and (now - tonumber(f[4])) * 10 >= last_usage then
  redis.call('HSET', object, 'u', now)
  left = remaining(tonumber(f[3]), now, now, max_age, last_usage)
  redis.call('PEXPIRE', object, left)
  for _, index_key in ipairs(cjson.decode(redis.call('HGET', object, 'k'))) do
    if redis.call('GET', index_key) == object then
      redis.call('PEXPIRE', index_key, left)
    end
  end
end
return f[1]
