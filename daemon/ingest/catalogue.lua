-- recd: apply catalogue records of one shard's items, atomically (daemon/ingest/catalogue.py).
-- KEYS: 1 cat (item -> record JSON), 2 cat:off (unavailable items), 3 cat:log (change stream); one slot.
-- ARGV: 1 the log's approximate cap, then per record: item id, ts (ms), available (1 or 0), record JSON.
-- The newest ts wins; at equal ts the larger encoding wins, so replays in any order end in the same state
-- and a record equal to the stored one changes nothing. Returns {applied, unchanged}.
local call = redis.call
local applied, unchanged = 0, 0
for a = 2, #ARGV, 4 do
  local item, ts, available, record = ARGV[a], tonumber(ARGV[a + 1]), ARGV[a + 2], ARGV[a + 3]
  local old = call('HGET', KEYS[1], item)
  local change, newer = 'new', true
  if old then
    local old_ts = tonumber(cjson.decode(old).ts)
    change = 'update'
    newer = ts > old_ts or (ts == old_ts and record > old)
  end
  if newer then
    call('HSET', KEYS[1], item, record)
    if available == '1' then call('SREM', KEYS[2], item) else call('SADD', KEYS[2], item) end
    call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[1], '*', 'item', item, 'change', change, 'available', available)
    applied = applied + 1
  else
    unchanged = unchanged + 1
  end
end
return {applied, unchanged}
