-- KEYS: index keys of this release, distinct: all of an object's keys (a copy under each), or
-- one batch of them (pointers to its body).
-- ARGV: prefix, tag, id, mode ('I': a copy under each key; 'P': a pointer to the body),
-- digest, tail ('<n>|<list><payload>': what follows the digest in a copy or body; with 'P',
-- given in the first batch only, which then stores the body), max_age_ms, last_usage_ms,
-- channel, then the announcements of the keys the object takes (published).
-- Removes every other object holding one of the keys — of this release whatever it is, of
-- other releases when its key set differs (another release's copy of the same object stays)
-- — then stores the object. Returns the bodies it removed, for their pointers to be swept.
local prefix, tag, id, mode, digest, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max_age, last_usage = tonumber(ARGV[7]), tonumber(ARGV[8])
local now = now_ms()
local own = prefix .. tag .. ':'
local killed = {}
local all = releases(prefix, tag, now)
for i = 1, #KEYS do
  local suffix = string.sub(KEYS[i], #own + 1)
  for r, rp in ipairs(all) do
    local k = rp .. suffix
    local v, kind = read(k)
    if kind == 'I' or kind == 'P' then
      if r == 1 then
        if id_of(v, kind) ~= id then remove(rp, k, v, kind, killed) end
      elseif digest_of(rp, v, kind) ~= digest then
        remove(rp, k, v, kind, killed)
      end
    end
  end
end
local left = remaining(now, now, now, max_age, last_usage)
local stamp = string.format('%013d', now)
local header = id .. '|' .. stamp .. '|' .. stamp .. '|' .. digest .. '|'
local value
if mode == 'I' then
  value = 'OC3|I|' .. header .. tail
else
  value = 'OC3|P|' .. id
  if tail ~= '' then
    local body = own .. 'o:' .. id
    if left then
      redis.call('SET', body, 'OC3|B|' .. header .. tail, 'PX', left)
    else
      redis.call('SET', body, 'OC3|B|' .. header .. tail)
    end
  end
end
for i = 1, #KEYS do
  if left then
    redis.call('SET', KEYS[i], value, 'PX', left)
  else
    redis.call('SET', KEYS[i], value)
  end
end
if left then register(prefix, tag, now + left, left) else register(prefix, tag, 0, 0) end
announce(ARGV[9], 10)
return killed
