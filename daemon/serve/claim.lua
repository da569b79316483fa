-- recd: claim up to N changed users of one shard for one serving worker, with a lease.
-- KEYS (the shard's, one slot): 1 dirty, 2 dirty:inflight, 3 swap queue (users to refresh after a model swap)
-- ARGV: 1 N, 2 now ms, 3 lease ms
-- Expired leases (a worker died) go back to the dirty queue first. Fresh changes come before
-- swap refreshes. A user another worker holds (an unexpired lease) stays queued, with its
-- score, until that worker acknowledges: two workers serving one user at once could write
-- the list from the older history last. A user in both queues is claimed once, as a fresh
-- change; its swap entry is dropped. Returns {users still queued, user, score, from_swap (0/1), ...}; score is
-- the message time of the user's earliest unserved change (dirty) or minus the last activity
-- time (swap).
local call = redis.call
local n, now, lease = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local CHUNK = 1000  -- members per multi-member call (unpack's stack limit is ~8,000 values)
local expired = call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
for _, u in ipairs(expired) do
  call('ZREM', KEYS[2], u)
  call('ZADD', KEYS[1], 'NX', now, u)
end

-- call(head..., values...) once per CHUNK members (width values each); the replies, concatenated.
local function chunked(values, width, ...)
  local replies = {}
  for s = 1, #values, CHUNK * width do
    local args = {...}
    for x = s, math.min(s + CHUNK * width - 1, #values) do args[#args + 1] = values[x] end
    local reply = call(unpack(args))
    if type(reply) == 'table' then
      for _, r in ipairs(reply) do replies[#replies + 1] = r end
    end
  end
  return replies
end

local out = {}
local taken = {}  -- users already in out: a user in both queues is claimed once (its swap entry is dropped)
-- Pops from zset key until the claim is full or key is empty; held users go back afterwards.
local function take(key, swap)
  local held = {}
  while #out / 3 < n do
    local popped = call('ZPOPMIN', key, n - #out / 3)
    if #popped == 0 then break end
    local users = {}
    for i = 1, #popped, 2 do users[#users + 1] = popped[i] end
    local leased = chunked(users, 1, 'ZMSCORE', KEYS[2])
    for i = 1, #popped, 2 do
      if leased[(i + 1) / 2] then
        held[#held + 1] = popped[i + 1]
        held[#held + 1] = popped[i]
      elseif not taken[popped[i]] then
        taken[popped[i]] = true
        out[#out + 1] = popped[i]
        out[#out + 1] = popped[i + 1]
        out[#out + 1] = swap
      end
    end
  end
  chunked(held, 2, 'ZADD', key)
end
take(KEYS[1], 0)
take(KEYS[3], 1)

local leased = {}
for i = 1, #out, 3 do
  leased[#leased + 1] = now + lease
  leased[#leased + 1] = out[i]
end
chunked(leased, 2, 'ZADD', KEYS[2])
table.insert(out, 1, call('ZCARD', KEYS[1]) + call('ZCARD', KEYS[3]))
return out
