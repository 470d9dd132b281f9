-- Shared by the scripts: the server's time, expiry, and the stored-object header (value.rs):
--   OC2|<object id: 32 hex>|<created: 13 digits>|<renewed: 13 digits>|<n>:<version>|<payload>
-- Anything else found in a key (written by someone else, an older layout, a wrong type) is
-- never trusted and never an error: it is treated as no object.

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

-- The first `length` bytes of the value of `key`, or nil when it is missing or not a string.
local function head(key, length)
  local h = redis.pcall('GETRANGE', key, 0, length - 1)
  if type(h) ~= 'string' or #h ~= length or string.sub(h, 1, 4) ~= 'OC2|' then return nil end
  return h
end

-- The id of the object `key` holds, or nil.
local function object_id(key)
  local h = head(key, 37)
  if h == nil or string.sub(h, 37, 37) ~= '|' then return nil end
  local id = string.sub(h, 5, 36)
  if not string.match(id, '^%x+$') then return nil end
  return id
end

-- Deletes the object `id` of the cache whose keys start with `prefix`: its record and every
-- index key that still holds it (a key set again since holds another object: left alone).
local function remove_object(prefix, id)
  local record = prefix .. 'o:' .. id
  local members = redis.pcall('SMEMBERS', record)
  if type(members) == 'table' and members.err == nil then
    for _, key in ipairs(members) do
      if object_id(key) == id then redis.call('DEL', key) end
    end
  end
  redis.call('DEL', record)
end
