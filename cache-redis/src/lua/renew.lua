-- KEYS[1] the key a hit read the object from: a copy, or a body.
-- ARGV: prefix, tag, id, max_age_ms, last_usage_ms, renew_after_ms, ms since the hit's read.
-- Renews LastUsage as of the hit (not of this later call): every copy still holding the
-- object (or the body) gets the hit's time and a new TTL — unless a renewal less than
-- renew_after_ms ago makes this one redundant. Returns the new TTL in ms (the body's pointers
-- are then renewed by sweep.lua), 0 when nothing was renewed, -1 when the object has no TTL.
local prefix, tag, id = ARGV[1], ARGV[2], ARGV[3]
local max_age, last_usage, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local own = prefix .. tag .. ':'
local now = now_ms()
local hit = now - tonumber(ARGV[7])
local stamp = string.format('%013d', hit)
local v, kind = read(KEYS[1])
if (kind ~= 'I' and kind ~= 'B') or id_of(v, kind) ~= id then return 0 end
local created, used = tonumber(string.sub(v, 24, 36)), tonumber(string.sub(v, 38, 50))
if created == nil or used == nil or hit - used < after then return 0 end
local left = remaining(created, hit, now, max_age, last_usage)
if left ~= nil and left <= 0 then return 0 end
local targets = { KEYS[1] }
if kind == 'I' then
  for _, s in ipairs(suffixes(v) or {}) do
    local k = own .. s
    if k ~= KEYS[1] then targets[#targets + 1] = k end
  end
end
for _, k in ipairs(targets) do
  local w, wk = read(k)
  if wk == kind and id_of(w, wk) == id then
    redis.call('SETRANGE', k, 37, stamp)
    if left then redis.call('PEXPIRE', k, left) end
  end
end
if left == nil then
  register(prefix, tag, 0, 0)
  return -1
end
register(prefix, tag, now + left, left)
return left
