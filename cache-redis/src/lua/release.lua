-- KEYS[1] a read-through's lease key (<release prefix>l:<suffix>). ARGV: the lease's token.
-- Ends the lease when it is still this one (its load found nothing or failed), so the next
-- miss leases the key at once instead of waiting for it to expire. Returns 1 when it ended.
local held = redis.call('GET', KEYS[1])
if type(held) == 'string' and string.match(held, '^(%x+)|') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
