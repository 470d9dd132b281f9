-- KEYS: index keys. ARGV[1]: the cache's key prefix.
-- Removes every object reachable through any of the keys, entirely, and the keys themselves
-- (whatever they hold); unknown keys are skipped and never stop the others.
for i = 1, #KEYS do
  local id = object_id(KEYS[i])
  if id then remove_object(ARGV[1], id) end
  redis.call('DEL', KEYS[i])
end
return 1
