-- KEYS[1] the cache's key prefix (a key of its hash slot: routes the call to its node on a
-- cluster). ARGV: cursor, MATCH pattern, COUNT, mode ('oc3': this layout; 'plain': another),
-- channel, then the announcements of the truncate (published with the last batch).
-- One SCAN batch. In this layout every key goes with its whole object — a copy takes every
-- copy, a pointer its body — so a set that lands while the scan runs, with some keys behind
-- the cursor and some ahead of it, never leaves part of its object behind (a ghost): either
-- all of it survives (the set came after the truncate) or none. Returns the next cursor
-- ("0" when the scan is complete).
local prefix, mode = KEYS[1], ARGV[4]
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[3]))
for _, key in ipairs(r[2]) do
  if mode == 'oc3' then
    local v, kind = read(key)
    local rp = string.sub(key, 1, #prefix + 13)
    if kind == 'I' then
      remove(rp, key, v, kind, {})
    elseif kind == 'P' then
      redis.call('UNLINK', rp .. 'o:' .. id_of(v, kind))
    end
  end
  redis.call('UNLINK', key)
end
if r[1] == '0' then announce(ARGV[5], 6) end
return r[1]
