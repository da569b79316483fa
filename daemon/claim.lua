-- recd: claim up to N changed users for one serving worker, with a lease.
-- KEYS: 1 dirty, 2 dirty:inflight, 3 swap queue (users to refresh after a model swap)
-- ARGV: 1 N, 2 now ms, 3 lease ms, 4/5 (optional) history key head/tail: also return each
-- claimed user's history blob, read in the same atomic step (one round trip for the serve loop)
-- Expired leases (a worker died) go back to the dirty queue first. Fresh changes come before
-- swap refreshes. Returns {user, score, from_swap (0/1), ...}; score is the message time of
-- the user's earliest unserved change (dirty) or minus the last activity time (swap); with
-- ARGV[4], each triple is followed by the history blob (nil when the user has none).
local n, now, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, u in ipairs(expired) do
  redis.call('ZREM', KEYS[2], u)
  redis.call('ZADD', KEYS[1], 'NX', now, u)
end
local out = {}
local popped = redis.call('ZPOPMIN', KEYS[1], n)
for i = 1, #popped, 2 do
  out[#out + 1] = popped[i]
  out[#out + 1] = popped[i + 1]
  out[#out + 1] = 0
end
local room = n - #popped / 2
if room > 0 then
  popped = redis.call('ZPOPMIN', KEYS[3], room)
  for i = 1, #popped, 2 do
    out[#out + 1] = popped[i]
    out[#out + 1] = popped[i + 1]
    out[#out + 1] = 1
  end
end
local leased = {}  -- one ZADD per 1,000 users (unpack's stack limit is ~8,000 values)
for i = 1, #out, 3 do
  leased[#leased + 1] = now + lease
  leased[#leased + 1] = out[i]
  if #leased == 2000 or i + 3 > #out then
    redis.call('ZADD', KEYS[2], unpack(leased))
    leased = {}
  end
end
if not ARGV[4] then return out end
local with = {}
for i = 1, #out, 3 do
  with[#with + 1] = out[i]
  with[#with + 1] = out[i + 1]
  with[#with + 1] = out[i + 2]
  with[#with + 1] = redis.call('GET', ARGV[4] .. out[i] .. ARGV[5])
end
return with
