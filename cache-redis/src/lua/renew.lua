-- KEYS[1] the key a hit read the object from: a copy, or a body; or, with an empty id, any
-- index key of the object (a pointer leads to its body).
-- ARGV: prefix, tag, id, max_age_ms, last_usage_ms, renew_after_ms, ms since the hit's read,
-- channel, purpose.
-- Renews LastUsage as of the hit (not of this later call): every copy still holding the
-- object (or the body) gets the hit's time and a new TTL — unless a renewal less than
-- renew_after_ms ago makes this one redundant. Returns {the new TTL in ms (0 when nothing
-- was renewed, -1 when the object has no TTL), the key renewed} — for a body, its pointers
-- are then renewed by sweep.lua.
local prefix, tag, id = ARGV[1], ARGV[2], ARGV[3]
local max_age, last_usage, after = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local own = prefix .. tag .. ':'
local now = now_ms()
local hit = now - tonumber(ARGV[7])
local stamp = string.format('%013d', hit)
local key = KEYS[1]
local v, kind = read(key)
if id == '' then
  if kind == 'P' then
    key = own .. 'o:' .. id_of(v, kind)
    v, kind = read(key)
  end
  if kind == 'I' or kind == 'B' then id = id_of(v, kind) end
end
if (kind ~= 'I' and kind ~= 'B') or id_of(v, kind) ~= id then return {0, key} end
local created, used = tonumber(string.sub(v, 24, 36)), tonumber(string.sub(v, 38, 50))
if created == nil or used == nil or hit - used < after then return {0, key} end
local left = remaining(created, hit, now, max_age, last_usage)
if left ~= nil and left <= 0 then return {0, key} end
local targets = { key }
if kind == 'I' then
  for _, s in ipairs(suffixes(v) or {}) do
    local k = own .. s
    if k ~= key then targets[#targets + 1] = k end
  end
end
local touched = {}
for _, k in ipairs(targets) do
  local w, wk = read(k)
  if wk == kind and id_of(w, wk) == id then
    redis.call('SETRANGE', k, 37, stamp)
    if left then redis.call('PEXPIRE', k, left) end
    if wk == 'I' then touched[#touched + 1] = string.sub(k, #own + 1) end
  end
end
announce_touched(ARGV[8], ARGV[9], touched)
if left == nil then
  register(prefix, tag, 0, 0)
  return {-1, key}
end
register(prefix, tag, now + left, left)
return {left, key}
