-- Shared by every script: the server's time, expiry, and removing one object entirely.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Milliseconds the object still lives, or nil when neither MaxAge nor LastUsage applies.
local function remaining(created, used, now, max_age, last_usage)
  local left = nil
  if max_age > 0 then left = created + max_age - now end
  if last_usage > 0 then
    local idle = used + last_usage - now
    if left == nil or idle < left then left = idle end
  end
  return left
end

-- Deletes the object and each of its index keys that still points at it.
local function remove_object(object)
  local keys = redis.call('HGET', object, 'k')
  if keys then
    for _, index_key in ipairs(cjson.decode(keys)) do
      if redis.call('GET', index_key) == object then
        redis.call('DEL', index_key)
      end
    end
  end
  redis.call('DEL', object)
end
