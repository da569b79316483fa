-- recd: apply one batch of interaction events, atomically, in one round trip.
-- KEYS: 1 items, 2 items:ids, 3 items:seq, 4 items:first, 5 pop, 6 trend,
--       7 trend:epoch, 8 active, 9 dirty, 10 stats
-- ARGV: 1 key prefix, 2 JSON {now, ttl, hl, n, u = [[user, [[sec, crc, item, code, val10, w, msg_ms], ...]], ...]}
-- History records (see daemon/keys.py): >IIIBh = sec, crc, item number, type code, value*10,
-- sorted by (sec, crc). An event whose (sec, crc, item) is in the history is a duplicate; one
-- older than the oldest record of a full history is stale (it would be trimmed at once, and a
-- replay of an event that was trimmed is exactly this case). Neither changes anything.
local P = ARGV[1]
local b = cjson.decode(ARGV[2])
local R, FMT = 15, '>IIIBh'
local now, ttl, hl, n = b.now, b.ttl, b.hl, b.n
local cache = {}
local applied, dups, stale, new_items, last_ts = 0, 0, 0, 0, 0
local stored_epoch = redis.call('GET', KEYS[7])
local epoch = stored_epoch and tonumber(stored_epoch) or nil

local function item_number(item)
  local v = cache[item]
  if v then return v end
  v = redis.call('HGET', KEYS[1], item)
  if not v then
    v = redis.call('INCR', KEYS[3])
    redis.call('HSET', KEYS[1], item, v)
    redis.call('HSET', KEYS[2], v, item)
    redis.call('ZADD', KEYS[4], 'NX', now, item)
    new_items = new_items + 1
  end
  v = tonumber(v)
  cache[item] = v
  return v
end

local function less(t1, f1, t2, f2)
  return t1 < t2 or (t1 == t2 and f1 < f2)
end

-- 0-based slot where the record goes, -1 for a duplicate, -2 for stale
local function find_slot(blob, count, sec, crc, inum)
  if count == 0 then return 0 end
  local lt, lf = struct.unpack('>II', blob, (count - 1) * R + 1)
  if less(lt, lf, sec, crc) then return count end
  local ft, ff = struct.unpack('>II', blob, 1)
  if count >= n and less(sec, crc, ft, ff) then return -2 end
  local lo, hi = 0, count
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local mt, mf = struct.unpack('>II', blob, mid * R + 1)
    if less(mt, mf, sec, crc) then lo = mid + 1 else hi = mid end
  end
  while lo < count do
    local mt, mf, mi = struct.unpack('>III', blob, lo * R + 1)
    if mt ~= sec or mf ~= crc then break end
    if mi == inum then return -1 end
    lo = lo + 1
  end
  return lo
end

local function trend_weight(sec, w)
  if not epoch then
    epoch = sec
    redis.call('SET', KEYS[7], epoch)
  end
  local x = (sec - epoch) / hl
  if x > 60 then
    local shift = math.floor(x) - 30
    redis.call('ZUNIONSTORE', KEYS[6], 1, KEYS[6], 'WEIGHTS', 2 ^ (-shift))
    epoch = epoch + shift * hl
    redis.call('SET', KEYS[7], epoch)
    x = (sec - epoch) / hl
  end
  return w * 2 ^ x
end

local function segments(pk)
  local s = redis.call('HGET', pk, '_seg')
  local out = {}
  if s then
    for seg in string.gmatch(s, '[^\n]+') do out[#out + 1] = P .. 'seg:' .. seg end
  end
  return out
end

local function count_positive(e, segs, pk)
  local item, w = e[3], e[6]
  redis.call('ZINCRBY', KEYS[5], w, item)
  redis.call('ZINCRBY', KEYS[6], trend_weight(e[1], w), item)
  if segs == nil then segs = segments(pk) end
  for _, sk in ipairs(segs) do redis.call('ZINCRBY', sk, w, item) end
  return segs
end

for _, u in ipairs(b.u) do
  local uid, evs = u[1], u[2]
  local hk = P .. 'u:{' .. uid .. '}:hist'
  local pk = P .. 'u:{' .. uid .. '}:prof'
  local blob = redis.call('GET', hk) or ''
  local count = #blob / R
  local segs, first_msg, user_last = nil, nil, nil
  for _, e in ipairs(evs) do
    local inum = item_number(e[3])
    local pos = find_slot(blob, count, e[1], e[2], inum)
    if pos == -1 then
      dups = dups + 1
    elseif pos == -2 then
      stale = stale + 1
    else
      blob = string.sub(blob, 1, pos * R) .. struct.pack(FMT, e[1], e[2], inum, e[4], e[5])
        .. string.sub(blob, pos * R + 1)
      count = count + 1
      if count > n then
        blob = string.sub(blob, (count - n) * R + 1)
        count = n
      end
      applied = applied + 1
      if e[6] > 0 then segs = count_positive(e, segs, pk) end
      if first_msg == nil or e[7] < first_msg then first_msg = e[7] end
      if user_last == nil or e[1] > user_last then user_last = e[1] end
    end
  end
  if first_msg ~= nil then
    if ttl > 0 then
      redis.call('SET', hk, blob, 'EX', ttl)
      redis.call('EXPIRE', pk, ttl)
    else
      redis.call('SET', hk, blob)
    end
    redis.call('ZADD', KEYS[8], 'GT', user_last * 1000, uid)
    redis.call('ZADD', KEYS[9], 'NX', first_msg, uid)
    if user_last > last_ts then last_ts = user_last end
  end
end

if applied > 0 then redis.call('HINCRBY', KEYS[10], 'applied', applied) end
if dups > 0 then redis.call('HINCRBY', KEYS[10], 'duplicates', dups) end
if stale > 0 then redis.call('HINCRBY', KEYS[10], 'stale', stale) end
if last_ts > 0 then
  local prev = tonumber(redis.call('HGET', KEYS[10], 'last_ts') or '0')
  if last_ts > prev then redis.call('HSET', KEYS[10], 'last_ts', last_ts) end
end
return {applied, dups, stale, new_items}
