-- KEYS: index keys of this release (a batch); or, with mode 'body', one body.
-- ARGV: prefix, tag, mode ('all': every release whose objects may be stored; 'own': this
-- release only, for what it cannot decode; 'body': remove that body), channel, then the
-- announcements of the change (published).
-- Removes the objects the keys hold, entirely (every copy, or the body), and the keys
-- themselves, whatever they hold. A key that holds nothing is skipped and never stops the
-- others. Returns the bodies removed, for their pointers to be swept.
local prefix, tag, mode = ARGV[1], ARGV[2], ARGV[3]
local own = prefix .. tag .. ':'
local killed = {}
if mode == 'body' then
  if kill(KEYS[1]) then killed[1] = KEYS[1] end
  announce(ARGV[4], 5)
  return killed
end
local all = { own }
if mode == 'all' then all = releases(prefix, tag, now_ms()) end
for i = 1, #KEYS do
  local suffix = string.sub(KEYS[i], #own + 1)
  for _, rp in ipairs(all) do
    local k = rp .. suffix
    local v, kind = read(k)
    if v then
      remove(rp, k, v, kind, killed)
    else
      redis.call('DEL', k)
    end
  end
end
announce(ARGV[4], 5)
return killed
