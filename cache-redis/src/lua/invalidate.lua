-- KEYS: index keys of this release (a batch); or, with mode 'body', one body.
-- ARGV: prefix, tag, mode ('all': every release whose objects may be stored; 'own': this
-- release only, for what it cannot decode; 'body': remove that body), lease_ms (0: leases off),
-- channel, purpose, then the announcements of the change (published).
-- Removes the objects the keys hold, entirely (every copy, or the body), and the keys
-- themselves, whatever they hold. A key that holds nothing is skipped and never stops the
-- others. Returns the bodies removed, for their pointers to be swept.
local prefix, tag, mode, lease_ms = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local own = prefix .. tag .. ':'
local killed = {}
local touched = {}
if mode == 'body' then
  if kill(KEYS[1]) then killed[1] = KEYS[1] end
  announce(ARGV[5], 7)
  return killed
end
local now = now_ms()
local all = { own }
if mode == 'all' then all = releases(prefix, tag, now) end
for i = 1, #KEYS do
  local suffix = string.sub(KEYS[i], #own + 1)
  for _, rp in ipairs(all) do
    local k = rp .. suffix
    local v, kind = read(k)
    -- The key itself is marked changed right after (a tombstone, or deleted).
    if v then remove(rp, k, v, kind, killed, touched, { [k] = true }) end
    mark_changed(rp, suffix, now, lease_ms)
  end
end
announce(ARGV[5], 7)
announce_touched(ARGV[5], ARGV[6], touched)
return killed
