-- recd: apply one shard's part of a batch of interaction events, atomically, in one round trip.
-- Every key is in KEYS and carries the shard's hash tag (one slot):
--   1 pop, 2 trend, 3 trend:epoch, 4 dirty, 5 stats, 6 segs,
--   then for the i-th user of b.u: 6 + 2i - 1 its history, 6 + 2i its profile,
--   then for the j-th name of ARGV[3]: 6 + 2 * #b.u + j that segment's popularity zset.
-- ARGV: 1 JSON {rec = {record, key, key_item, size}, now, ttl, hl, n, max_sec, check (whether segments
--       are configured at all), items = [item ids],
--       u = [[user, sec, crc24, item index (1-based), code, w, msg_ms, sec, ...], ...]}
--       (each user's events flat, six fields apiece, in arrival order);
--       2 JSON [the number of each item, from the item dictionary]; 3 JSON [segment names];
--       4 JSON [the segment index (in ARGV 3, 0 = none) each user's profile is expected to name]
--       (1 is encoded while the previous batch runs; 2-4 are small and made just before the call)
-- Returns {applied, duplicates, stale, {i, segment, ...}}: the last lists the users whose profile names
-- another finest segment than expected (its '_seg' field): nothing of theirs is applied; the caller sends
-- them again with the right segment key.
--
-- History records (layout in daemon/runtime/history.py, passed in b.rec): sec, crc24, item number,
-- code byte, sorted by (sec, crc). An event whose (sec, crc, item) is in the history is a duplicate; one
-- older than the oldest record of a full history is stale (it would be trimmed at once, and a
-- replay of an event that was trimmed is exactly this case). Neither changes anything.
-- Popularity increments are summed per (key, item) and written once per batch; segment
-- popularity is counted at the user's finest segment (coarser levels are unions of these).
--
-- Cost: Redis hashes every byte of each string it hands to Lua (a 1.2 KB history: ~1.5 us),
-- and each redis.call has a fixed cost (~0.7 us) plus ~0.2-0.5 us per number argument it
-- formats. So a history is copied into Lua once - only the records that survive when the
-- new ones can be appended (the usual case) - and Redis appends; the dirty and segs members
-- go in a few multi-member calls; repeated numbers are passed as text.
local call, unpack_rec, pack_rec, sub = redis.call, struct.unpack, struct.pack, string.sub
local b = cjson.decode(ARGV[1])
-- the record layout, given by daemon/runtime/history.py (its one owner)
local R, FMT, KEY, KEY_ITEM = b.rec.size, b.rec.record, b.rec.key, b.rec.key_item
local CHUNK = 1000  -- values per multi-member call (Lua's unpack() gives at most 8000)
local numbers, seg_names, expected = cjson.decode(ARGV[2]), cjson.decode(ARGV[3]), cjson.decode(ARGV[4])
local ttl, hl, n = b.ttl, b.hl, b.n
local items, incr = b.items, {}
local applied, dups, stale, last_ts = 0, 0, 0, 0
local USERS = 6  -- KEYS before the users'
local SEGS = USERS + 2 * #b.u  -- KEYS before the segments'

-- The number of batch item i (assigned by the item dictionary before this call).
local function item_number(i)
  return numbers[i]
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
    local mt, mf, mi = unpack_rec(KEY_ITEM, blob, lo * R + 1)
    if mt ~= sec or mf ~= crc then break end
    if mi == inum then return -1 end
    lo = lo + 1
  end
  return lo
end

-- Trend scores are relative to an epoch; move it (rescaling stored scores) before any
-- factor could exceed 2^60, so scores stay finite for any span of event times.
local function prepare_epoch()
  local stored = call('GET', KEYS[3])
  local epoch = stored and tonumber(stored) or nil
  local max_sec = b.max_sec
  if max_sec == 0 then return epoch end
  if not epoch then
    epoch = max_sec
    call('SET', KEYS[3], epoch)
  elseif (max_sec - epoch) / hl > 60 then
    local shift = math.floor((max_sec - epoch) / hl) - 30
    call('ZUNIONSTORE', KEYS[2], 1, KEYS[2], 'WEIGHTS', 2 ^ (-shift))
    epoch = epoch + shift * hl
    call('SET', KEYS[3], epoch)
  end
  return epoch
end

-- call(head..., values...) for each CHUNK of values: one call for many members.
local function chunked(values, ...)
  for s = 1, #values, CHUNK do
    local args = {...}
    for x = s, math.min(s + CHUNK - 1, #values) do args[#args + 1] = values[x] end
    call(unpack(args))
  end
end

local function add(key, item, w)
  local t = incr[key]
  if not t then
    t = {}
    incr[key] = t
  end
  t[item] = (t[item] or 0) + w
end

-- The history with rec inserted at slot pos and, beyond n records, the oldest dropped: one
-- concatenation (each string made here costs a hash of all its bytes).
local function insert(blob, count, pos, rec)
  local drop = math.max(0, count + 1 - n)
  if pos < drop then return sub(blob, (drop - 1) * R + 1), count + 1 - drop end  -- rec dropped too
  local head = (drop == 0 and pos == count) and blob or sub(blob, drop * R + 1, pos * R)
  local tail = pos == count and '' or sub(blob, pos * R + 1)
  return head .. rec .. tail, count + 1 - drop
end

local ONE = {2}  -- append_order of a lone event (read only: saves a table per user)

-- Positions j of the user's events in (sec, crc) order when appending them to a history
-- whose last record is (lt, lf) gives what one insert each would: every event newer than
-- that record and no two with the same (sec, crc). Else nil.
local function append_order(u, lt, lf)
  if #u == 7 then return (not lt or less(lt, lf, u[2], u[3])) and ONE or nil end
  local order, sorted = {}, true
  for j = 2, #u, 6 do
    if lt and not less(lt, lf, u[j], u[j + 1]) then return nil end
    local p = order[#order]
    if p and not less(u[p], u[p + 1], u[j], u[j + 1]) then sorted = false end
    order[#order + 1] = j
  end
  if sorted then return order end
  table.sort(order, function(x, y) return less(u[x], u[x + 1], u[y], u[y + 1]) end)
  for k = 2, #order do
    local x, y = order[k - 1], order[k]
    if u[x] == u[y] and u[x + 1] == u[y + 1] then return nil end
  end
  return order
end

-- The shard's aggregates must hold their types before anything is written (see write_all).
local function check_types()
  local want = {'zset', 'zset', 'string', 'zset', 'hash', 'set'}
  for k = SEGS + 1, #KEYS do want[k] = 'zset' end
  for k, kind in pairs(want) do
    local found = call('TYPE', KEYS[k]).ok
    if found ~= 'none' and found ~= kind then
      return redis.error_reply('WRONGTYPE ' .. KEYS[k] .. ' holds a ' .. found .. ', recd keeps a ' .. kind .. ' there')
    end
  end
end

local wrong = check_types()
if wrong then return wrong end
local epoch = prepare_epoch()
local TTL = tostring(ttl)  -- numbers given to redis.call are formatted with %.17g each time
local keep_from = {}       -- k -> GETRANGE start of the n - k newest records, as text
local seg_used = {}        -- indexes (in sn) of segments counted: their names go to segs
local dirty = {}           -- first message ms, user, ... for ZADD NX
-- The segment zset key of the user being applied (false: none). A plain local, not a table per user.
local user_seg = false

-- The segment index the user's profile names (0: none) or nil and the name when it is not the expected
-- one. Only a user with a positive event needs one (only positives count in segment popularity).
local function check_segment(i, u)
  local want = expected[i]
  if not b.check then return 0 end  -- no segments configured
  local positive = false
  for j = 6, #u, 6 do
    if u[j] > 0 then positive = true; break end
  end
  if not positive then return 0 end
  local actual = call('HGET', KEYS[USERS + 2 * i], '_seg') or ''
  local name = want > 0 and seg_names[want] or ''
  if actual ~= name then return nil, actual end
  return want
end

-- Counts an applied event (u[j...]): stats, popularity, trend and segment popularity.
-- Returns the earliest message time of the user's applied events so far (first: before this one).
local function count_applied(u, j, first)
  local sec, w, msg = u[j], u[j + 4], u[j + 5]
  applied = applied + 1
  if sec > last_ts then last_ts = sec end
  if first ~= nil and first < msg then msg = first end
  if w <= 0 then return msg end
  local item = items[u[j + 2]]
  add(KEYS[1], item, w)
  add(KEYS[2], item, w * 2 ^ ((sec - epoch) / hl))
  if user_seg then add(user_seg, item, w) end
  return msg
end

-- Writes wait until every user was read and computed: a command that fails (a key of the wrong type)
-- then fails before anything was written, as Redis does not undo a script's writes.
local writes = {}  -- {history key, value[, appended]} or {profile key} (to expire)

local function set_history(hk, blob, appended)
  writes[#writes + 1] = {hk, blob, appended}
end

local function write_all()
  for _, w in ipairs(writes) do
    if w[2] == nil then
      call('EXPIRE', w[1], TTL)
    else
      if ttl > 0 then call('SET', w[1], w[2], 'EX', TTL) else call('SET', w[1], w[2]) end
      if w[3] then call('APPEND', w[1], w[3]) end
    end
  end
end

-- The general case: each event in arrival order, given its slot (or not) in the history.
local function insert_each(u, hk, blob)
  local count, first_msg = #blob / R, nil
  for j = 2, #u, 6 do
    local sec, crc = u[j], u[j + 1]
    local inum = item_number(u[j + 2])
    local pos = find_slot(blob, count, sec, crc, inum)
    if pos == -1 then
      dups = dups + 1
    elseif pos == -2 then
      stale = stale + 1
    else
      blob, count = insert(blob, count, pos, pack_rec(FMT, sec, crc, inum, u[j + 3]))
      first_msg = count_applied(u, j, first_msg)
    end
  end
  if first_msg ~= nil then set_history(hk, blob) end
  return first_msg
end

-- The common case (see append_order): the records that survive, as read, then the new ones,
-- appended by Redis (joining them here would hash another copy of the history).
local function append_all(u, hk, kept, order)
  local recs, new, first_msg = order ~= ONE and {} or nil, nil, nil
  for j = 2, #u, 6 do  -- arrival order, as insert_each: item numbers and sums come out the same
    new = pack_rec(FMT, u[j], u[j + 1], item_number(u[j + 2]), u[j + 3])
    if recs then recs[j] = new end
    first_msg = count_applied(u, j, first_msg)
  end
  if recs then
    for k, j in ipairs(order) do order[k] = recs[j] end
    new = table.concat(order)
  end
  if kept == '' then
    set_history(hk, new)
  else
    set_history(hk, kept, new)
  end
  return first_msg
end

-- Applies the user's events to history hk; the first message time of those applied, or nil.
-- Fewer than n events can all be appended when append_order allows, and then only the n - k
-- newest records are read; otherwise the whole history is.
local function apply_history(u, hk)
  local k, kept = (#u - 1) / 6, nil
  if k < n then
    local from = keep_from[k]
    if not from then
      from = tostring(-(n - k) * R)
      keep_from[k] = from
    end
    kept = call('GETRANGE', hk, from, '-1')
    local lt, lf = nil, nil
    if #kept > 0 then lt, lf = unpack_rec(KEY, kept, #kept - R + 1) end
    local order = append_order(u, lt, lf)
    if order then return append_all(u, hk, kept, order) end
    if #kept < (n - k) * R then return insert_each(u, hk, kept) end  -- all of it
  end
  return insert_each(u, hk, call('GET', hk) or '')
end

local mismatched = {}  -- i, actual segment, ...

local function apply_user(i, u)
  local seg, actual = check_segment(i, u)
  if seg == nil then
    mismatched[#mismatched + 1] = i
    mismatched[#mismatched + 1] = actual
    return
  end
  user_seg = seg > 0 and KEYS[SEGS + seg] or false
  if seg > 0 then seg_used[seg] = true end
  local first_msg = apply_history(u, KEYS[USERS + 2 * i - 1])
  if first_msg == nil then return end
  if ttl > 0 then writes[#writes + 1] = {KEYS[USERS + 2 * i]} end
  dirty[#dirty + 1] = first_msg
  dirty[#dirty + 1] = u[1]
end

for i, u in ipairs(b.u) do apply_user(i, u) end
write_all()

-- Popularity sums (of a few distinct weights) repeat: each formatted once, as Redis would
-- (%.17g). Trend sums rarely do, so they go as numbers.
local texts = {}
local function as_text(w)
  local s = texts[w]
  if not s then
    s = string.format('%.17g', w)
    texts[w] = s
  end
  return s
end

for key, its in pairs(incr) do
  if key == KEYS[2] then
    for item, w in pairs(its) do call('ZINCRBY', key, w, item) end
  else
    for item, w in pairs(its) do call('ZINCRBY', key, as_text(w), item) end
  end
end
local segs = {}
for seg in pairs(seg_used) do segs[#segs + 1] = seg_names[seg] end
chunked(segs, 'SADD', KEYS[6])
chunked(dirty, 'ZADD', KEYS[4], 'NX')
if applied > 0 then call('HINCRBY', KEYS[5], 'applied', applied) end
if dups > 0 then call('HINCRBY', KEYS[5], 'duplicates', dups) end
if stale > 0 then call('HINCRBY', KEYS[5], 'stale', stale) end
if last_ts > 0 then
  local prev = tonumber(call('HGET', KEYS[5], 'last_ts') or '0')
  if last_ts > prev then call('HSET', KEYS[5], 'last_ts', last_ts) end
end
return {applied, dups, stale, mismatched}
