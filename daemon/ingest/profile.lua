-- recd: apply one batch of profile events, atomically. The newest event time wins, so a
-- replayed or older profile changes nothing.
-- KEYS: 1 dirty, 2 stats
-- ARGV: 1 key prefix, 2 JSON {ttl, p = [[user, ts_ms, msg_ms, [k1, v1, k2, v2, ...]], ...]}
local P = ARGV[1]
local b = cjson.decode(ARGV[2])
local applied, older = 0, 0
for _, p in ipairs(b.p) do
  local pk = P .. 'u:{' .. p[1] .. '}:prof'
  local cur = redis.call('HGET', pk, '_ts')
  if cur and tonumber(cur) >= p[2] then
    older = older + 1
  else
    redis.call('DEL', pk)
    redis.call('HSET', pk, '_ts', p[2], unpack(p[4]))
    if b.ttl > 0 then redis.call('EXPIRE', pk, b.ttl) end
    redis.call('ZADD', KEYS[1], 'NX', p[3], p[1])
    applied = applied + 1
  end
end
if applied > 0 then redis.call('HINCRBY', KEYS[2], 'profiles', applied) end
return {applied, older}
