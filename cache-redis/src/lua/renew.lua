-- KEYS[1] an object's record.
-- ARGV: object id, max_age_ms, last_usage_ms, renew_after_ms, ms since the hit's GET was sent.
-- Renews LastUsage of the object as of the hit (not of this later call): every index key still
-- holding it gets the hit's time in its header and a new TTL, as does the record — unless a
-- renewal less than renew_after_ms ago makes this one redundant. Returns how many keys were
-- renewed.
local id = ARGV[1]
local max_age, last_usage, after = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local members = redis.pcall('SMEMBERS', KEYS[1])
if type(members) ~= 'table' or members.err ~= nil then return 0 end
local now = now_ms()
local hit = now - tonumber(ARGV[5])
local stamp = string.format('%013d', hit)
local renewed, left = 0, nil
for _, key in ipairs(members) do
  local h = head(key, 65)
  if h ~= nil and string.sub(h, 5, 36) == id then
    local created = tonumber(string.sub(h, 38, 50))
    local used = tonumber(string.sub(h, 52, 64))
    if created == nil or used == nil then
      redis.call('DEL', key) -- a garbled header is never served again
    elseif hit - used < after then
      return renewed -- renewed just now by another hit
    else
      left = remaining(created, hit, now, max_age, last_usage)
      if left ~= nil and left > 0 then
        redis.call('SETRANGE', key, 51, stamp)
        redis.call('PEXPIRE', key, left)
        renewed = renewed + 1
      end
    end
  end
end
if left ~= nil and left > 0 then redis.call('PEXPIRE', KEYS[1], left) end
return renewed
