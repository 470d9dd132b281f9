-- KEYS[1] the new object's record, KEYS[2..] its index keys (distinct).
-- ARGV: prefix, object id, version part ("<n>:<version>|"), payload, max_age_ms, last_usage_ms.
-- Removes every older object holding one of the keys (entirely), then stores the new one under
-- every key, with the object's TTL on each key and on the record.
local prefix, id = ARGV[1], ARGV[2]
for i = 2, #KEYS do
  local older = object_id(KEYS[i])
  if older and older ~= id then remove_object(prefix, older) end
end
local max_age, last_usage = tonumber(ARGV[5]), tonumber(ARGV[6])
local now = now_ms()
local left = remaining(now, now, now, max_age, last_usage)
local stamp = string.format('%013d', now)
local value = 'OC2|' .. id .. '|' .. stamp .. '|' .. stamp .. '|' .. ARGV[3] .. ARGV[4]
redis.call('DEL', KEYS[1])
local batch = {}
for i = 2, #KEYS do
  if left then
    redis.call('SET', KEYS[i], value, 'PX', left)
  else
    redis.call('SET', KEYS[i], value)
  end
  batch[#batch + 1] = KEYS[i]
  if #batch == 500 or i == #KEYS then
    redis.call('SADD', KEYS[1], unpack(batch))
    batch = {}
  end
end
if left then redis.call('PEXPIRE', KEYS[1], left) end
return 1
