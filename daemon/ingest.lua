-- recd: apply one batch of interaction events, atomically, in one round trip.
-- KEYS: 1 items, 2 items:ids, 3 items:seq, 4 items:first, 5 pop, 6 trend,
--       7 trend:epoch, 8 items:gen, 9 dirty, 10 stats, 11 segs
-- ARGV: 1 key prefix, 2 JSON {now, ttl, hl, n, seg = [attribute names], gen, token,
--       items = [[item id, item number or 0], ...],
--       max_sec, u = [[user, sec, crc24, item index (1-based), code, w, msg_ms, sec, ...], ...]}
--       (each user's events flat, six fields apiece, in arrival order)
-- Returns {applied, duplicates, stale, new items, gen, {item index, number, ...}} or, when the
-- caller's item numbers belong to another generation of the items hash, {-1, gen}.
--
-- History records (see daemon/keys.py): >II3IB = sec, crc24, item number, code byte,
-- sorted by (sec, crc). An event whose (sec, crc, item) is in the history is a duplicate; one
-- older than the oldest record of a full history is stale (it would be trimmed at once, and a
-- replay of an event that was trimmed is exactly this case). Neither changes anything.
-- Popularity increments are summed per (key, item) and written once per batch; segment
-- popularity is counted at the user's finest segment (coarser levels are unions of these).
local call, unpack_rec, pack_rec, sub = redis.call, struct.unpack, struct.pack, string.sub
local P = ARGV[1]
local b = cjson.decode(ARGV[2])
local R, FMT, KEY = 12, '>II3IB', '>II3'
local now, ttl, hl, n, seg_names = b.now, b.ttl, b.hl, b.n, b.seg
local items, incr, assigned = b.items, {}, {}
local applied, dups, stale, new_items, last_ts = 0, 0, 0, 0, 0

local gen = call('GET', KEYS[8])
if not gen then
  call('SET', KEYS[8], b.token)
  gen = b.token
end
if b.gen ~= gen then
  for _, it in ipairs(items) do
    if it[2] ~= 0 then return {-1, gen} end
  end
end

-- Item number of batch item i: given by the caller, looked up, or assigned now.
local function item_number(i)
  local it = items[i]
  if it[2] ~= 0 then return it[2] end
  local v = call('HGET', KEYS[1], it[1])
  if not v then
    v = call('INCR', KEYS[3])
    call('HSET', KEYS[1], it[1], v)
    call('HSET', KEYS[2], v, it[1])
    call('ZADD', KEYS[4], 'NX', now, it[1])
    new_items = new_items + 1
  end
  it[2] = tonumber(v)
  assigned[#assigned + 1] = i
  assigned[#assigned + 1] = it[2]
  return it[2]
end

local function less(t1, f1, t2, f2)
  return t1 < t2 or (t1 == t2 and f1 < f2)
end

-- 0-based slot where the record goes, -1 for a duplicate, -2 for stale
local function find_slot(blob, count, sec, crc, inum)
  if count == 0 then return 0 end
  local lt, lf = unpack_rec(KEY, blob, (count - 1) * R + 1)
  if less(lt, lf, sec, crc) then return count end
  local ft, ff = unpack_rec(KEY, blob, 1)
  if count >= n and less(sec, crc, ft, ff) then return -2 end
  local lo, hi = 0, count
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local mt, mf = unpack_rec(KEY, blob, mid * R + 1)
    if less(mt, mf, sec, crc) then lo = mid + 1 else hi = mid end
  end
  while lo < count do
    local mt, mf, mi = unpack_rec('>II3I', blob, lo * R + 1)
    if mt ~= sec or mf ~= crc then break end
    if mi == inum then return -1 end
    lo = lo + 1
  end
  return lo
end

-- Trend scores are relative to an epoch; move it (rescaling stored scores) before any
-- factor could exceed 2^60, so scores stay finite for any span of event times.
local function prepare_epoch()
  local stored = call('GET', KEYS[7])
  local epoch = stored and tonumber(stored) or nil
  local max_sec = b.max_sec
  if max_sec == 0 then return epoch end
  if not epoch then
    epoch = max_sec
    call('SET', KEYS[7], epoch)
  elseif (max_sec - epoch) / hl > 60 then
    local shift = math.floor((max_sec - epoch) / hl) - 30
    call('ZUNIONSTORE', KEYS[6], 1, KEYS[6], 'WEIGHTS', 2 ^ (-shift))
    epoch = epoch + shift * hl
    call('SET', KEYS[7], epoch)
  end
  return epoch
end

local function add(key, item, w)
  local t = incr[key]
  if not t then
    t = {}
    incr[key] = t
  end
  t[item] = (t[item] or 0) + w
end

-- The user's finest profile segment ('country=US|age_band=25-34|...'), or false.
local function finest_segment(pk)
  if #seg_names == 0 then return false end
  local vals = call('HMGET', pk, unpack(seg_names))
  local chain = false
  for i, name in ipairs(seg_names) do
    local v = vals[i]
    if not v or v == '' then break end
    v = string.gsub((string.gsub(v, '|', '/')), '\n', ' ')
    chain = (chain and (chain .. '|') or '') .. name .. '=' .. v
  end
  return chain
end

local function insert(blob, count, pos, rec)
  blob = sub(blob, 1, pos * R) .. rec .. sub(blob, pos * R + 1)
  count = count + 1
  if count > n then
    blob = sub(blob, (count - n) * R + 1)
    count = n
  end
  return blob, count
end

local epoch = prepare_epoch()
local segments_seen = {}

local function count_positive(pk, seg_key, item, w, sec)
  add(KEYS[5], item, w)
  add(KEYS[6], item, w * 2 ^ ((sec - epoch) / hl))
  if seg_key == nil then
    local seg = finest_segment(pk)
    seg_key = seg and (P .. 'seg:' .. seg) or false
    if seg then segments_seen[seg] = true end
  end
  if seg_key then add(seg_key, item, w) end
  return seg_key
end

local function apply_user(u)
  local uid = u[1]
  local hk = P .. 'u:{' .. uid .. '}:hist'
  local pk = P .. 'u:{' .. uid .. '}:prof'
  local blob = call('GET', hk) or ''
  local count = #blob / R
  local seg_key, first_msg = nil, nil
  for j = 2, #u, 6 do
    local sec, crc, ii, w, msg = u[j], u[j + 1], u[j + 2], u[j + 4], u[j + 5]
    local inum = item_number(ii)
    local pos = find_slot(blob, count, sec, crc, inum)
    if pos == -1 then
      dups = dups + 1
    elseif pos == -2 then
      stale = stale + 1
    else
      blob, count = insert(blob, count, pos, pack_rec(FMT, sec, crc, inum, u[j + 3]))
      applied = applied + 1
      if w > 0 then seg_key = count_positive(pk, seg_key, items[ii][1], w, sec) end
      if first_msg == nil or msg < first_msg then first_msg = msg end
      if sec > last_ts then last_ts = sec end
    end
  end
  if first_msg ~= nil then
    if ttl > 0 then
      call('SET', hk, blob, 'EX', ttl)
      call('EXPIRE', pk, ttl)
    else
      call('SET', hk, blob)
    end
    call('ZADD', KEYS[9], 'NX', first_msg, uid)
  end
end

for _, u in ipairs(b.u) do apply_user(u) end

for key, its in pairs(incr) do
  for item, w in pairs(its) do call('ZINCRBY', key, w, item) end
end
for seg, _ in pairs(segments_seen) do call('SADD', KEYS[11], seg) end
if applied > 0 then call('HINCRBY', KEYS[10], 'applied', applied) end
if dups > 0 then call('HINCRBY', KEYS[10], 'duplicates', dups) end
if stale > 0 then call('HINCRBY', KEYS[10], 'stale', stale) end
if last_ts > 0 then
  local prev = tonumber(call('HGET', KEYS[10], 'last_ts') or '0')
  if last_ts > prev then call('HSET', KEYS[10], 'last_ts', last_ts) end
end
return {applied, dups, stale, new_items, gen, assigned}
