-- KEYS: index keys of this release (a batch). ARGV: prefix, tag, channel, then the
-- announcements of the change (published).
-- Removes these keys of every release whose objects may be stored; their objects stay
-- reachable through their other keys.
local prefix, tag = ARGV[1], ARGV[2]
local own = prefix .. tag .. ':'
local all = releases(prefix, tag, now_ms())
for i = 1, #KEYS do
  local suffix = string.sub(KEYS[i], #own + 1)
  for _, rp in ipairs(all) do
    redis.call('DEL', rp .. suffix)
  end
end
announce(ARGV[3], 4)
return 1
