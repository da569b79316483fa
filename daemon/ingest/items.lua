-- recd: give item ids their dense numbers (the item dictionary, one slot: tag {items}).
-- KEYS: 1 items (id -> number), 2 items:ids (number -> id), 3 items:seq, 4 items:first, 5 items:gen
-- ARGV: 1 generation token to set when there is none, 2 now (ms), 3... item ids
-- Returns {generation, new items, number of ARGV[3], number of ARGV[4], ...}. An id keeps its number for
-- ever; the generation token names this numbering, so clients that cache numbers notice when the
-- dictionary was lost and numbers start again.
local call = redis.call
local gen = call('GET', KEYS[5])
if not gen then
  call('SET', KEYS[5], ARGV[1])
  gen = ARGV[1]
end
local out, new = {gen, 0}, 0
for a = 3, #ARGV do
  local id = ARGV[a]
  local v = call('HGET', KEYS[1], id)
  if not v then
    v = call('INCR', KEYS[3])
    call('HSET', KEYS[1], id, v)
    call('HSET', KEYS[2], v, id)
    call('ZADD', KEYS[4], 'NX', ARGV[2], id)
    new = new + 1
  end
  out[#out + 1] = tonumber(v)
end
out[2] = new
return out
