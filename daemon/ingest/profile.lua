-- recd: apply one shard's part of a batch of profile events, atomically. The newest event time wins, so a
-- replayed or older profile changes nothing.
-- KEYS: 1 dirty, 2 stats, then the i-th profile of b.p at 2 + i (every key in the shard's slot).
-- ARGV: 1 JSON {ttl, p = [[user, ts_ms, msg_ms, finest segment or '', [k1, v1, k2, v2, ...]], ...]}
-- The finest segment is the caller's (daemon/runtime/profiles.py); ingest.lua counts a user's positive
-- events there. Returns {applied, older}.
local b = cjson.decode(ARGV[1])
local applied, older = 0, 0
for i, p in ipairs(b.p) do
  local pk = KEYS[2 + i]
  local cur = redis.call('HGET', pk, '_ts')
  if cur and tonumber(cur) >= p[2] then
    older = older + 1
  else
    redis.call('DEL', pk)
    redis.call('HSET', pk, '_ts', p[2], '_seg', p[4], unpack(p[5]))
    if b.ttl > 0 then redis.call('EXPIRE', pk, b.ttl) end
    redis.call('ZADD', KEYS[1], 'NX', p[3], p[1])
    applied = applied + 1
  end
end
if applied > 0 then redis.call('HINCRBY', KEYS[2], 'profiles', applied) end
return {applied, older}
