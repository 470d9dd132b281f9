-- KEYS: index keys of this release (a batch). ARGV: prefix, tag, lease_ms (0: leases off),
-- channel, then the announcements of the change (published).
-- Removes these keys of every release whose objects may be stored; their objects stay
-- reachable through their other keys.
local prefix, tag, lease_ms = ARGV[1], ARGV[2], tonumber(ARGV[3])
local own = prefix .. tag .. ':'
local now = now_ms()
local all = releases(prefix, tag, now)
for i = 1, #KEYS do
  local suffix = string.sub(KEYS[i], #own + 1)
  for _, rp in ipairs(all) do
    mark_changed(rp, suffix, now, lease_ms)
  end
end
announce(ARGV[4], 5)
return 1
