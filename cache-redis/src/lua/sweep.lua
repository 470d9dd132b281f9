-- KEYS[1] the body of an object stored once (live, or removed).
-- ARGV: mode ('delete' | 'renew'), release prefix, id, offset (0 to start), done, ttl_ms,
-- channel, purpose.
-- Handles the body's pointers from the key-list entry at byte `offset` on, at most 64 KB of
-- the list per call: 'delete' removes those still pointing at the body (and, at the end, the
-- removed body itself), 'renew' moves their TTL to ttl_ms. Returns {next offset, entries
-- handled so far, entries in all}; done when the two counts are equal.
local mode, rp, id = ARGV[1], ARGV[2], ARGV[3]
local offset, done, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local body = KEYS[1]
local head = redis.pcall('GETRANGE', body, 0, 99)
if type(head) ~= 'string' or #head < 69 or string.sub(head, 1, 4) ~= 'OC3|'
    or string.sub(head, 7, 22) ~= id then
  return {0, 0, 0}
end
local bar = string.find(head, '|', 69, true)
local n = bar and tonumber(string.sub(head, 69, bar - 1))
if not n then return {0, 0, 0} end
if offset == 0 then offset = bar end
local chunk = redis.call('GETRANGE', body, offset, offset + 65535)
local at = 1
local pointer = 'OC3|P|' .. id
local renewed = {}
while done < n do
  local colon = string.find(chunk, ':', at, true)
  if not colon then break end
  local len = tonumber(string.sub(chunk, at, colon - 1))
  if not len then return {0, n, n} end
  if colon + len > #chunk then break end
  local suffix = string.sub(chunk, colon + 1, colon + len)
  local k = rp .. suffix
  if redis.pcall('GET', k) == pointer then
    if mode == 'delete' then
      redis.call('DEL', k)
    else
      redis.call('PEXPIRE', k, ttl)
      renewed[#renewed + 1] = suffix
    end
  end
  at = colon + len + 1
  done = done + 1
end
announce_touched(ARGV[7], ARGV[8], renewed)
if at == 1 and done < n then return {0, n, n} end -- one entry larger than a chunk: garbled
if done == n and mode == 'delete' and string.sub(head, 1, 6) == 'OC3|D|' then
  redis.call('DEL', body)
end
return {offset + at - 1, done, n}
