-- recd: queue one shard's recently served users for a list refresh after a model swap.
-- KEYS (the shard's, one slot): 1 active (user -> wall ms of the last list written for a change), 2 swap queue
-- ARGV: 1 since (wall ms), 2 most users
-- The swap queue's score is minus the last activity, so the most recently active are refreshed first.
-- Returns how many were queued.
local users = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
local CHUNK = 1000  -- members per ZADD (unpack's stack limit is ~8,000 values)
for s = 1, #users, 2 * CHUNK do
  local args = {'ZADD', KEYS[2]}
  for i = s, math.min(s + 2 * CHUNK - 1, #users), 2 do
    args[#args + 1] = -tonumber(users[i + 1])
    args[#args + 1] = users[i]
  end
  redis.call(unpack(args))
end
return #users / 2
