-- recd: apply one batch of interaction events, atomically, in one round trip.
-- KEYS: 1 items, 2 items:ids, 3 items:seq, 4 items:first, 5 pop, 6 trend,
--       7 trend:epoch, 8 items:gen, 9 dirty, 10 stats, 11 segs
-- ARGV: 1 key prefix, 2 JSON {rec = {record, key, key_item, size}, now, ttl, hl, n,
--       seg = [attribute names], gen, token,
--       items = [[item id, item number or 0], ...],
--       max_sec, u = [[user, sec, crc24, item index (1-based), code, w, msg_ms, sec, ...], ...]}
--       (each user's events flat, six fields apiece, in arrival order)
-- Returns {applied, duplicates, stale, new items, gen, {item index, number, ...}} or, when the
-- caller's item numbers belong to another generation of the items hash, {-1, gen}.
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
local P = ARGV[1]
local b = cjson.decode(ARGV[2])
-- the record layout, given by daemon/runtime/history.py (its one owner)
local R, FMT, KEY, KEY_ITEM = b.rec.size, b.rec.record, b.rec.key, b.rec.key_item
local CHUNK = 1000  -- values per multi-member call (Lua's unpack() gives at most 8000)
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

-- call(head..., values...) for each CHUNK of values: one call for many members.
local function chunked(values, ...)
  for s = 1, #values, CHUNK do
    local args = {...}
    for x = s, math.min(s + CHUNK - 1, #values) do args[#args + 1] = values[x] end
    call(unpack(args))
  end
end

-- 'name1=v1|name2=v2|...' of the first depth segment attributes ('|' and newlines in values
-- would be read as separators).
local function build_chain(vals, depth)
  local parts = {}
  for i = 1, depth do
    local v = vals[i]
    if string.find(v, '[|\n]') then v = string.gsub((string.gsub(v, '|', '/')), '\n', ' ') end
    parts[i] = seg_names[i] .. '=' .. v
  end
  return table.concat(parts, '|')
end

local function add(key, item, w)
  local t = incr[key]
  if not t then
    t = {}
    incr[key] = t
  end
  t[item] = (t[item] or 0) + w
end

-- Chains by profile values, per batch: few distinct profiles, so the chain and its key are
-- built once each, not once per user. node[v1][v2]...[0] = chain of the values on that path.
local chain_memo = {}

-- The user's finest profile segment ('country=US|age_band=25-34|...') or false.
local function finest_segment(pk)
  local vals = call('HMGET', pk, unpack(seg_names))
  local node, depth = chain_memo, 0
  for i = 1, #seg_names do
    local v = vals[i]
    if not v or v == '' then break end
    local nxt = node[v]
    if not nxt then
      nxt = {}
      node[v] = nxt
    end
    node, depth = nxt, i
  end
  if depth == 0 then return false end
  if not node[0] then node[0] = build_chain(vals, depth) end
  return node[0]
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

local epoch = prepare_epoch()
local TTL = tostring(ttl)  -- numbers given to redis.call are formatted with %.17g each time
local keep_from = {}       -- k -> GETRANGE start of the n - k newest records, as text
local seg_keys = {}        -- segment -> its zset key; also the segments to add to segs
local dirty = {}           -- first message ms, user, ... for ZADD NX
-- The user being applied: profile key, and its segment's zset key (false: none; nil: not
-- looked up yet). Plain locals rather than a table per user.
local user_pk, user_seg = nil, nil

-- The zset key of the user's finest segment, or false.
local function segment_key()
  if #seg_names == 0 then return false end
  local seg = finest_segment(user_pk)
  if not seg then return false end
  local key = seg_keys[seg]
  if not key then
    key = P .. 'seg:' .. seg
    seg_keys[seg] = key
  end
  return key
end

-- Counts an applied event (u[j...]): stats, popularity, trend and segment popularity.
-- Returns the earliest message time of the user's applied events so far (first: before this one).
local function count_applied(u, j, first)
  local sec, w, msg = u[j], u[j + 4], u[j + 5]
  applied = applied + 1
  if sec > last_ts then last_ts = sec end
  if first ~= nil and first < msg then msg = first end
  if w <= 0 then return msg end
  local item = items[u[j + 2]][1]
  add(KEYS[5], item, w)
  add(KEYS[6], item, w * 2 ^ ((sec - epoch) / hl))
  if user_seg == nil then user_seg = segment_key() end
  if user_seg then add(user_seg, item, w) end
  return msg
end

local function set_history(hk, blob)
  if ttl > 0 then call('SET', hk, blob, 'EX', TTL) else call('SET', hk, blob) end
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
    set_history(hk, kept)
    call('APPEND', hk, new)
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

local function apply_user(u)
  local uid = u[1]
  user_pk, user_seg = P .. 'u:{' .. uid .. '}:prof', nil
  local first_msg = apply_history(u, P .. 'u:{' .. uid .. '}:hist')
  if first_msg == nil then return end
  if ttl > 0 then call('EXPIRE', user_pk, TTL) end
  dirty[#dirty + 1] = first_msg
  dirty[#dirty + 1] = uid
end

for _, u in ipairs(b.u) do apply_user(u) end

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
  if key == KEYS[6] then
    for item, w in pairs(its) do call('ZINCRBY', key, w, item) end
  else
    for item, w in pairs(its) do call('ZINCRBY', key, as_text(w), item) end
  end
end
local segs = {}
for seg in pairs(seg_keys) do segs[#segs + 1] = seg end
chunked(segs, 'SADD', KEYS[11])
chunked(dirty, 'ZADD', KEYS[9], 'NX')
if applied > 0 then call('HINCRBY', KEYS[10], 'applied', applied) end
if dups > 0 then call('HINCRBY', KEYS[10], 'duplicates', dups) end
if stale > 0 then call('HINCRBY', KEYS[10], 'stale', stale) end
if last_ts > 0 then
  local prev = tonumber(call('HGET', KEYS[10], 'last_ts') or '0')
  if last_ts > prev then call('HSET', KEYS[10], 'last_ts', last_ts) end
end
return {applied, dups, stale, new_items, gen, assigned}
