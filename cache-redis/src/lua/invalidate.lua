-- KEYS: index keys. Removes every object reachable through any of them, entirely; unknown
-- keys are skipped and never stop the others.
for i = 1, #KEYS do
  local object = redis.call('GET', KEYS[i])
  if object then
    remove_object(object)
    redis.call('DEL', KEYS[i])
  end
end
return 1
