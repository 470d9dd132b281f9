-- KEYS[1] the cache's key prefix (a key of its hash slot: routes the call to its node on a
-- cluster). ARGV: cursor, MATCH pattern, COUNT. One SCAN batch: every matching key goes with
-- the whole object it belongs to — an object's record takes every index key still holding it,
-- an index key takes its object's record and other keys — then the key itself. So a set that
-- lands while the scan runs, with some keys behind the cursor and some ahead of it, never
-- leaves part of its object behind (a ghost): either all of it survives (the set came after
-- the truncate) or none. Returns the next cursor ("0" when the scan is complete).
local prefix = KEYS[1]
local records = prefix .. 'o:'
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', tonumber(ARGV[3]))
for _, key in ipairs(r[2]) do
  if string.sub(key, 1, #records) == records then
    remove_object(prefix, string.sub(key, #records + 1))
  else
    local id = object_id(key)
    if id then remove_object(prefix, id) end
    redis.call('UNLINK', key)
  end
end
return r[1]
