-- Shared by the scripts. What a key holds (value.rs):
--   OC3|I|<id>|<created>|<renewed>|<digest>|<n>|<len>:<suffix>...<payload>  an object's copy
--   OC3|B|... the same, the body of an object stored once;  OC3|D|... a removed body
--   OC3|P|<id>  a pointer to the body <release prefix>o:<id>;  OC3|T|<ms>  a tombstone (the key
--   was invalidated or deleted then: fills whose lease is older are refused)
-- A read-through's lease on a key is <release prefix>l:<suffix>, holding <token>|<ms taken>.
-- A key name is <release prefix><suffix>, the release prefix <cache prefix><tag>:. Anything
-- else found in a key (written by someone else, another layout, another type) is never
-- trusted and never an error: it holds no value.

-- How long a removed body is kept for its pointers to be swept (they answer nothing already).
local GRACE_MS = 60000

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

-- Whether `v` is a well-formed object header (copy or body): its fixed fields in place.
local function is_object(v)
  return #v >= 68 and string.sub(v, 23, 23) == '|' and string.sub(v, 37, 37) == '|'
    and string.sub(v, 51, 51) == '|' and string.sub(v, 68, 68) == '|'
    and string.match(string.sub(v, 7, 22), '^%x+$') ~= nil
end

-- The value `key` holds and its kind ('I', 'B', 'D', 'P', 'L'), or nil for no value.
local function read(key)
  local v = redis.pcall('GET', key)
  if type(v) ~= 'string' or #v < 7 or string.sub(v, 1, 4) ~= 'OC3|'
      or string.sub(v, 6, 6) ~= '|' then
    return nil, nil
  end
  local kind = string.sub(v, 5, 5)
  if (kind == 'I' or kind == 'B') and not is_object(v) then return nil, nil end
  if kind == 'T' and not string.match(string.sub(v, 7), '^%d+$') then return nil, nil end
  if kind == 'P' and not string.match(string.sub(v, 7), '^%x+$') then return nil, nil end
  return v, kind
end

-- The id of the object a copy or pointer `v` of kind `kind` stands for.
local function id_of(v, kind)
  if kind == 'P' then return string.sub(v, 7) end
  return string.sub(v, 7, 22)
end

-- The key suffixes an object's copy or body lists, or nil when the list is garbled.
local function suffixes(v)
  local bar = string.find(v, '|', 69, true)
  if not bar then return nil end
  local n = tonumber(string.sub(v, 69, bar - 1))
  if not n then return nil end
  local out, at = {}, bar + 1
  for i = 1, n do
    local colon = string.find(v, ':', at, true)
    if not colon then return nil end
    local len = tonumber(string.sub(v, at, colon - 1))
    if not len then return nil end
    out[i] = string.sub(v, colon + 1, colon + len)
    at = colon + len + 1
  end
  return out
end

-- Marks `body` removed (its pointers answer nothing from now on; sweep.lua deletes them) and
-- keeps it GRACE_MS at most. Whether it was a live body.
local function kill(body)
  if redis.pcall('GETRANGE', body, 0, 5) ~= 'OC3|B|' then return false end
  redis.call('SETRANGE', body, 4, 'D')
  local ttl = redis.call('PTTL', body)
  if ttl < 0 or ttl > GRACE_MS then redis.call('PEXPIRE', body, GRACE_MS) end
  return true
end

-- The key-set digest of the object a copy or pointer stands for (a pointer's from its body),
-- or nil when there is no such object.
local function digest_of(rp, v, kind)
  if kind == 'I' then return string.sub(v, 52, 67) end
  local head = redis.pcall('GETRANGE', rp .. 'o:' .. string.sub(v, 7), 0, 66)
  if type(head) ~= 'string' or #head ~= 67 or string.sub(head, 1, 6) ~= 'OC3|B|' then
    return nil
  end
  return string.sub(head, 52, 67)
end

-- Removes the object `key` (of the release with prefix `rp`) holds as `v` of kind `kind`:
-- every copy of it still holding it (their suffixes appended to `touched`, when given), or its
-- body (appended to `killed`); then `key` itself. Keys in `keep` (a set of key names, or nil)
-- are left as they are: the caller overwrites them in the same script and announces them.
local function remove(rp, key, v, kind, killed, touched, keep)
  keep = keep or {}
  if kind == 'I' then
    local id = id_of(v, kind)
    local list = suffixes(v) or {}
    for _, s in ipairs(list) do
      local k = rp .. s
      if k ~= key and not keep[k] then
        local w, wk = read(k)
        if wk == 'I' and id_of(w, wk) == id then
          redis.call('DEL', k)
          if touched then touched[#touched + 1] = s end
        end
      end
    end
  elseif kind == 'P' then
    local body = rp .. 'o:' .. id_of(v, kind)
    if kill(body) then killed[#killed + 1] = body end
  end
  if not keep[key] then redis.call('DEL', key) end
end

-- Deletes the keys of the list `keys` (at most a few thousand), in as few calls as can be.
local function del_all(keys)
  for first = 1, #keys, 500 do
    redis.call('DEL', unpack(keys, first, math.min(first + 499, #keys)))
  end
end

-- The prefixes of the releases whose objects may be stored: this one's first, then those the
-- registry names that have not expired (expired ones are dropped from it); and what the
-- registry holds for this release, as `HGET` would answer (for `register`).
local function releases(prefix, tag, now)
  local out = { prefix .. tag .. ':' }
  local registry = prefix .. 'v'
  local all = redis.pcall('HGETALL', registry)
  if type(all) ~= 'table' or all.err ~= nil then return out, all end
  local mine = false
  for i = 1, #all, 2 do
    local other, until_ms = all[i], tonumber(all[i + 1])
    if other == tag then
      mine = all[i + 1]
    elseif until_ms == nil or (until_ms ~= 0 and until_ms <= now) then
      redis.call('HDEL', registry, other)
    else
      out[#out + 1] = prefix .. other .. ':'
    end
  end
  return out, mine
end

-- Whether `v`, a copy or body, has expired by MaxAge / LastUsage at `now` (kept past it for
-- stale-if-error only).
local function expired(v, now, max_age, last_usage)
  local created, used = tonumber(string.sub(v, 24, 36)), tonumber(string.sub(v, 38, 50))
  if created == nil or used == nil then return true end
  local left = remaining(created, used, now, max_age, last_usage)
  return left ~= nil and left <= 0
end

-- Marks the key `k` of a release (prefix `rp`, key suffix `suffix`) changed at `now`: its
-- lease goes, and with leases on (lease_ms > 0) a tombstone stays for that long, so that a
-- fill whose lease was taken before is refused; otherwise the key just goes.
local function mark_changed(rp, suffix, now, lease_ms)
  redis.call('DEL', rp .. 'l:' .. suffix)
  if lease_ms > 0 then
    redis.call('SET', rp .. suffix, 'OC3|T|' .. string.format('%013d', now), 'PX', lease_ms)
  else
    redis.call('DEL', rp .. suffix)
  end
end

-- Publishes ARGV[from..] on `channel`: the announcements of this change, built by the
-- connector, leaving the server in the same atomic step as the change itself.
local function announce(channel, from)
  for i = from, #ARGV do redis.call('PUBLISH', channel, ARGV[i]) end
end

-- Tells the listeners on `channel` that these keys of `purpose` (their suffixes) were written
-- as no change of their own (LastUsage renewed; the other keys of an object removed through
-- an announced key), so the server's reports of those writes are not taken for changes made
-- behind the library's back (see the channel's tracking).
local function announce_touched(channel, purpose, touched)
  if #touched > 0 then
    redis.call('PUBLISH', channel, cjson.encode({o = 0, p = purpose, k = 'u', z = touched}))
  end
end

-- Notes in the registry that this release stores objects until `until_ms` (0: no expiry),
-- with a quarter of `ttl` to spare so that it is written once per quarter TTL, not per set;
-- the registry itself expires with its longest-lived release. `current`: what the registry
-- holds for this release as `HGET` answers it, when the caller read it already.
local function register(prefix, tag, until_ms, ttl, current)
  local registry = prefix .. 'v'
  if current == nil then current = redis.pcall('HGET', registry, tag) end
  if type(current) == 'table' then
    redis.call('DEL', registry) -- not a hash: garbage
    current = nil
  end
  current = tonumber(current)
  if current == 0 or (current ~= nil and until_ms ~= 0 and current >= until_ms) then return end
  if until_ms ~= 0 then until_ms = until_ms + math.floor(ttl / 4) end
  redis.call('HSET', registry, tag, until_ms)
  local all = redis.call('HGETALL', registry)
  local longest = 0
  for i = 2, #all, 2 do
    local u = tonumber(all[i]) or 0
    if u == 0 then
      redis.call('PERSIST', registry)
      return
    end
    if u > longest then longest = u end
  end
  redis.call('PEXPIREAT', registry, longest)
end
