-- KEYS: index keys of this release, distinct: all of an object's keys (a copy under each), or
-- one batch of them (pointers to its body).
-- ARGV: prefix, tag, id, mode ('I': a copy under each key; 'P': a pointer to the body),
-- digest, tail ('<n>|<list><payload>': what follows the digest in a copy or body; with 'P',
-- given in the first batch only, which then stores the body), max_age_ms, last_usage_ms,
-- lease ('': a plain set; else the suffix of the key a read-through leased), token (the
-- lease's), last ('1' in the last batch), channel, purpose, then the announcements of the
-- keys the object takes (published).
-- A fill (with a lease) is refused — nothing stored, and a body this set wrote in an earlier
-- batch removed — unless the lease is still this one and no key of the object changed since it
-- was taken (a tombstone, or an object set, after it); a refused fill ends its lease. Then, as
-- a plain set: removes every
-- other object holding one of the keys — of this release whatever it is, of other releases
-- when its key set differs (another release's copy of the same object stays) — stores the
-- object, and ends the keys' leases. Returns {'stored' or 'refused', bodies removed...}.
local prefix, tag, id, mode, digest, tail = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local max_age, last_usage = tonumber(ARGV[7]), tonumber(ARGV[8])
local lease, token, last = ARGV[9], ARGV[10], ARGV[11] == '1'
local now = now_ms()
local own = prefix .. tag .. ':'
local killed = {}
local touched = {}

if lease ~= '' then
  local held = redis.pcall('GET', own .. 'l:' .. lease)
  local taken = nil
  if type(held) == 'string' then
    local t, at = string.match(held, '^(%x+)|(%d+)$')
    if t == token then taken = tonumber(at) end
  end
  local overtaken = taken == nil
  for i = 1, #KEYS do
    if overtaken then break end
    local v, kind = read(KEYS[i])
    if kind == 'T' then
      overtaken = tonumber(string.sub(v, 7)) >= taken
    elseif kind == 'I' then
      overtaken = tonumber(string.sub(v, 24, 36)) >= taken and id_of(v, kind) ~= id
    elseif kind == 'P' and id_of(v, kind) ~= id then
      local body = redis.pcall('GETRANGE', own .. 'o:' .. id_of(v, kind), 0, 36)
      overtaken = type(body) == 'string' and #body == 37
        and (tonumber(string.sub(body, 24, 36)) or 0) >= taken
    end
  end
  if overtaken then
    -- An earlier batch of this fill may have stored the body: it goes (its pointers then
    -- answer nothing, and are swept). The lease, still this one's, ends: the next miss
    -- loads again at once instead of waiting for it to expire.
    if taken ~= nil then redis.call('DEL', own .. 'l:' .. lease) end
    local result = { 'refused' }
    if mode == 'P' and kill(own .. 'o:' .. id) then result[2] = own .. 'o:' .. id end
    return result
  end
end

local all, registered = releases(prefix, tag, now)
-- This release's keys the object takes are overwritten below and announced by this set: an
-- older object's copies under them are neither deleted first nor announced again.
local keep = {}
for i = 1, #KEYS do keep[KEYS[i]] = true end
-- Objects of this release removed already (their copies under the kept keys still read as
-- them until overwritten).
local removed = {}
for i = 1, #KEYS do
  local suffix = string.sub(KEYS[i], #own + 1)
  for r, rp in ipairs(all) do
    local k = rp .. suffix
    local v, kind = read(k)
    if kind == 'I' or kind == 'P' then
      if r == 1 then
        local other = id_of(v, kind)
        if other ~= id and not removed[other] then
          removed[other] = true
          remove(rp, k, v, kind, killed, touched, keep)
        end
      elseif digest_of(rp, v, kind) ~= digest then
        remove(rp, k, v, kind, killed, touched)
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
-- A set ends the keys' leases (a fill its own, in its last batch).
local leases = {}
for i = 1, #KEYS do
  if left then
    redis.call('SET', KEYS[i], value, 'PX', left)
  else
    redis.call('SET', KEYS[i], value)
  end
  local suffix = string.sub(KEYS[i], #own + 1)
  if suffix ~= lease then leases[#leases + 1] = own .. 'l:' .. suffix end
end
if lease ~= '' and last then leases[#leases + 1] = own .. 'l:' .. lease end
del_all(leases)
if left then
  register(prefix, tag, now + left, left, registered)
else
  register(prefix, tag, 0, 0, registered)
end
announce(ARGV[12], 14)
announce_touched(ARGV[12], ARGV[13], touched)
local result = { 'stored' }
for _, body in ipairs(killed) do result[#result + 1] = body end
return result
