"""The Redis broker's Lua scripts: each one round trip, atomic, on the server's clock.

What the in-memory frontier does under its lock (see
:mod:`crawler.broker.frontier` and :mod:`crawler.broker.hosts`) happens here
inside Redis, so that every worker and the master see one frontier: per-host
ready lists served in turn from a rotation, per-host caps and pace, leases
in a sorted set by deadline, results paired with their task in an inbox.
Every deadline and pace is computed from Redis's ``TIME``, never a
machine's own clock, since the machines' clocks differ.

Every script takes the crawl's key prefix as ``ARGV[1]`` and builds its key
names from it, as scrapy-redis and rq do with theirs: a crawl's keys are
found by that prefix alone. (So the keys are not declared to Redis, and
Redis Cluster, which needs them declared, is not supported.)

Keys under the prefix, besides those of :mod:`crawler.broker.redis_broker`:
``tasks`` (hash id -> task JSON, every URL in play), ``q:HOST`` (list of
ready ids), ``rotation``/``inrot`` (hosts with ready ids, each once),
``ready_n``, ``inflight``/``next_at``/``delay`` (hash per host), ``leases``
(sorted set id -> deadline in ms), ``lease`` (hash id -> "worker TAB host TAB
granted"), ``waiting`` (sorted set "id TAB host" -> due time), ``inbox``
(list of "id TAB length-of-task LF task result"), ``wake``, ``workers``/``seen``/``done``
(hash per worker), ``told``/``gone`` (sets of workers).
"""

from __future__ import annotations

__all__ = [
    "ADD", "ADD_LATER", "DELIVER", "END_LEASES", "IS_OVER", "LOCK", "RELEASE", "RENEW", "TAKE", "TURN",
]  # fmt: skip

# Shared by the scripts below: the server's time in ms, and putting a host in the rotation.
_PRELUDE = """
local p = ARGV[1]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function make_ready(host, id, front)
  if front then redis.call('LPUSH', p .. 'q:' .. host, id) else redis.call('RPUSH', p .. 'q:' .. host, id) end
  if redis.call('SADD', p .. 'inrot', host) == 1 then redis.call('RPUSH', p .. 'rotation', host) end
end
local function end_lease(id, per_host)
  local lease = redis.call('HGET', p .. 'lease', id)
  if not lease then return nil end
  redis.call('HDEL', p .. 'lease', id)
  redis.call('ZREM', p .. 'leases', id)
  local worker, host = string.match(lease, '^([^\\t]*)\\t([^\\t]*)\\t')
  if per_host > 0 then redis.call('HINCRBY', p .. 'inflight', host, -1) end
  return worker, host
end
local function per_host_cap()
  return tonumber(redis.call('HGET', p .. 'config', 'per_host')) or 0
end
-- End the leases of ids and take their tasks out of play; append id, worker, granted to out.
local function end_leases(ids, out)
  local per_host = per_host_cap()
  for _, id in ipairs(ids) do
    local lease = redis.call('HGET', p .. 'lease', id)
    redis.call('HDEL', p .. 'tasks', id)
    if lease then
      end_lease(id, per_host)
      out[#out + 1] = id
      out[#out + 1] = string.match(lease, '^([^\\t]*)\\t')
      out[#out + 1] = string.match(lease, '\\t([^\\t]*)$')
    end
  end
  return out
end
-- Make ready the retries whose time has come; return how many.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', p .. 'waiting', '-inf', now, 'LIMIT', 0, 10000)
  for _, member in ipairs(due) do
    redis.call('ZREM', p .. 'waiting', member)
    local id, host = string.match(member, '^(.-)\\t(.*)$')
    make_ready(host, id, false)
  end
  redis.call('INCRBY', p .. 'ready_n', #due)
  return #due
end
"""

ADD = (
    _PRELUDE
    + """
-- ARGV: prefix, then for each host: host, n, then n (id, task JSON) pairs. Make them ready, a
-- host's ids in one push: a window refill is thousands of tasks of a few hosts.
local i, total = 2, 0
while i <= #ARGV do
  local host, n = ARGV[i], tonumber(ARGV[i + 1])
  local ids, pairs = {}, {}
  for k = 0, n - 1 do
    local id, task = ARGV[i + 2 + 2 * k], ARGV[i + 3 + 2 * k]
    ids[#ids + 1] = id
    pairs[#pairs + 1] = id
    pairs[#pairs + 1] = task
  end
  redis.call('HSET', p .. 'tasks', unpack(pairs))
  redis.call('RPUSH', p .. 'q:' .. host, unpack(ids))
  if redis.call('SADD', p .. 'inrot', host) == 1 then redis.call('RPUSH', p .. 'rotation', host) end
  total = total + n
  i = i + 2 + 2 * n
end
redis.call('INCRBY', p .. 'ready_n', total)
return total
"""
)

ADD_LATER = (
    _PRELUDE
    + """
-- ARGV: prefix, host, id, task JSON, delay in ms: ready once the delay has passed.
redis.call('HSET', p .. 'tasks', ARGV[3], ARGV[4])
redis.call('ZADD', p .. 'waiting', now_ms() + tonumber(ARGV[5]), ARGV[3] .. '\\t' .. ARGV[2])
return 1
"""
)

TURN = (
    _PRELUDE
    + """
-- ARGV: prefix, recorded, batch. The master's turn in one round trip: drop the first recorded
-- entries of the inbox (the master has recorded them), make ready the retries whose time has come,
-- end the leases past their deadline, count the window, and take up to batch new entries.
-- Returns {-1} when the crawl's keys are gone (Redis restarted empty); else
-- {ready, leased, starved, n, id, worker, granted (x n), entry, entry...}.
if redis.call('EXISTS', p .. 'epoch') == 0 then return {-1} end
if tonumber(ARGV[2]) > 0 then redis.call('LTRIM', p .. 'inbox', ARGV[2], -1) end
local now = now_ms()
promote(now)
local overdue = redis.call('ZRANGEBYSCORE', p .. 'leases', '-inf', now, 'LIMIT', 0, 10000)
local out = {0, 0, 0, 0}
end_leases(overdue, out)
out[1] = tonumber(redis.call('GET', p .. 'ready_n') or '0')
out[2] = redis.call('ZCARD', p .. 'leases')
out[3] = tonumber(redis.call('GET', p .. 'starved') or '0')
out[4] = (#out - 4) / 3
for _, entry in ipairs(redis.call('LRANGE', p .. 'inbox', 0, tonumber(ARGV[3]) - 1)) do out[#out + 1] = entry end
return out
"""
)

TAKE = (
    _PRELUDE
    + """
-- ARGV: prefix, worker, limit, extra. Lease up to limit ready tasks (and up to extra more
-- while plenty remain for every live worker and no host is capped or paced), in turn across
-- hosts. Returns id, task, id, task...; -1: no crawl here (yet, or the keys were lost);
-- -2: the crawl is over, the master is closing, or this worker left.
local worker, limit, extra = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
if redis.call('EXISTS', p .. 'epoch') == 0 then return -1 end
if redis.call('EXISTS', p .. 'over', p .. 'closed') > 0 or redis.call('SISMEMBER', p .. 'gone', worker) == 1 then
  return -2
end
local now = now_ms()
redis.call('HSET', p .. 'seen', worker, now)
local cfg = redis.call('HMGET', p .. 'config', 'lease_ms', 'per_host', 'paced', 'delay_ms')
local lease_ms, per_host = tonumber(cfg[1]), tonumber(cfg[2]) or 0
local paced, default_delay = cfg[3] == '1', tonumber(cfg[4]) or 0
local ready = tonumber(redis.call('GET', p .. 'ready_n') or '0')
if extra > 0 and per_host == 0 and not paced then
  local live, seen = 0, redis.call('HGETALL', p .. 'seen')
  for i = 1, #seen, 2 do
    if tonumber(seen[i + 1]) >= now - lease_ms then
      live = live + (tonumber(redis.call('HGET', p .. 'workers', seen[i])) or 1)
    end
  end
  if ready - limit - extra >= live then limit = limit + extra end
end
local rot, deadline, out, taken, popped, held_back = p .. 'rotation', now + lease_ms, {}, 0, 0, 0
while taken < limit do
  local hosts = redis.call('LLEN', rot)
  if hosts == 0 or held_back >= hosts then break end
  local host = redis.call('LINDEX', rot, 0)
  local held = (per_host > 0 and (tonumber(redis.call('HGET', p .. 'inflight', host)) or 0) >= per_host)
    or (paced and (tonumber(redis.call('HGET', p .. 'next_at', host)) or 0) > now)
  if held then
    redis.call('LMOVE', rot, rot, 'LEFT', 'RIGHT')
    held_back = held_back + 1
  else
    -- Unthrottled, a host gives its share of what is still wanted in one pop; otherwise one id.
    local want = 1
    if per_host == 0 and not paced then want = math.ceil((limit - taken) / hosts) end
    local ids = redis.call('LPOP', p .. 'q:' .. host, want)
    if not ids then
      redis.call('LPOP', rot)
      redis.call('SREM', p .. 'inrot', host)
    else
      popped = popped + #ids
      for _, id in ipairs(ids) do
        local task = redis.call('HGET', p .. 'tasks', id)
        -- Dropped when a late result finished it while it waited, or it is leased already.
        if task and redis.call('HEXISTS', p .. 'lease', id) == 0 then
          redis.call('ZADD', p .. 'leases', deadline, id)
          redis.call('HSET', p .. 'lease', id, worker .. '\\t' .. host .. '\\t' .. now)
          if per_host > 0 then redis.call('HINCRBY', p .. 'inflight', host, 1) end
          out[#out + 1] = id
          out[#out + 1] = task
          taken = taken + 1
        end
      end
      if paced then
        local delay = tonumber(redis.call('HGET', p .. 'delay', host)) or default_delay
        redis.call('HSET', p .. 'next_at', host, now + delay)
      end
      held_back = 0
      redis.call('LMOVE', rot, rot, 'LEFT', 'RIGHT')
    end
  end
end
if popped > 0 then redis.call('DECRBY', p .. 'ready_n', popped) end
redis.call('SET', p .. 'starved', (taken == 0 and ready - popped > 0) and 1 or 0)
return out
"""
)

DELIVER = (
    _PRELUDE
    + """
-- ARGV: prefix, worker, then (id, result JSON) pairs. A result for a URL still in play ends its
-- lease and goes to the inbox with its task; any other is a late duplicate, dropped.
-- Returns how many were accepted; -1: no crawl here (the worker keeps its results).
local worker = ARGV[2]
if redis.call('EXISTS', p .. 'epoch') == 0 then return -1 end
redis.call('HSET', p .. 'seen', worker, now_ms())
local per_host, accepted = per_host_cap(), 0
for i = 3, #ARGV, 2 do
  local id = ARGV[i]
  local task = redis.call('HGET', p .. 'tasks', id)
  if task then
    redis.call('HDEL', p .. 'tasks', id)
    end_lease(id, per_host)
    -- The task's length frames it: a malformed one may hold any byte.
    redis.call('RPUSH', p .. 'inbox', id .. '\\t' .. #task .. '\\n' .. task .. ARGV[i + 1])
    accepted = accepted + 1
  end
end
redis.call('HINCRBY', p .. 'done', worker, (#ARGV - 2) / 2)
if accepted > 0 and redis.call('LLEN', p .. 'wake') == 0 then redis.call('RPUSH', p .. 'wake', 1) end
return accepted
"""
)

RENEW = (
    _PRELUDE
    + """
-- ARGV: prefix, worker, then the ids the worker holds. Move the deadlines of those leases that
-- are still the worker's; return how many (-1: no crawl). A lease the worker does not know it
-- holds (its reply was lost) is not renewed, and expires.
local worker = ARGV[2]
if redis.call('EXISTS', p .. 'epoch') == 0 then return -1 end
local now = now_ms()
redis.call('HSET', p .. 'seen', worker, now)
local deadline = now + tonumber(redis.call('HGET', p .. 'config', 'lease_ms'))
local mine, n = worker .. '\\t', 0
for i = 3, #ARGV do
  local lease = redis.call('HGET', p .. 'lease', ARGV[i])
  if lease and string.sub(lease, 1, #mine) == mine then
    redis.call('ZADD', p .. 'leases', 'XX', deadline, ARGV[i])
    n = n + 1
  end
end
return n
"""
)

RELEASE = (
    _PRELUDE
    + """
-- ARGV: prefix, worker, leaving (1/0). Put the worker's tasks back at the front of their hosts'
-- queues, without counting an attempt; a worker leaving is given nothing more.
local worker, leaving = ARGV[2], ARGV[3] == '1'
if redis.call('EXISTS', p .. 'epoch') == 0 then return -1 end
local mine, leases, per_host, held = worker .. '\\t', redis.call('HGETALL', p .. 'lease'), per_host_cap(), {}
for i = 1, #leases, 2 do
  if string.sub(leases[i + 1], 1, #mine) == mine then held[#held + 1] = leases[i] end
end
-- Pushed to the front highest id first, so that they go out again in the order they came.
table.sort(held, function(a, b) return tonumber(a) > tonumber(b) end)
for _, id in ipairs(held) do
  local _, host = end_lease(id, per_host)
  make_ready(host, id, true)
end
local n = #held
redis.call('INCRBY', p .. 'ready_n', n)
if leaving then redis.call('SADD', p .. 'gone', worker) end
return n
"""
)

END_LEASES = (
    _PRELUDE
    + """
-- ARGV: prefix, then ids. End those leases and take their tasks out of play (a new master drops
-- the robots.txt tasks of the one before). Returns id, worker, granted (ms), id, worker, granted...
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
return end_leases(ids, {})
"""
)

IS_OVER = """
-- ARGV: prefix, worker. 1 (and the worker is noted as told) once the crawl is over or the
-- master is closing; 0 otherwise, and while the crawl's keys are missing.
local p = ARGV[1]
if redis.call('EXISTS', p .. 'over', p .. 'closed') > 0 then
  redis.call('SADD', p .. 'told', ARGV[2])
  return 1
end
return 0
"""

LOCK = """
-- ARGV: prefix, token, ttl in ms. Keep the master's lock: 1 renewed, 2 taken again after it
-- lapsed (Redis restarted, or this master stalled past the TTL), 0 another master holds it.
local key = ARGV[1] .. 'lock'
local holder = redis.call('GET', key)
if holder == ARGV[2] then
  redis.call('PEXPIRE', key, ARGV[3])
  return 1
end
if not holder and redis.call('SET', key, ARGV[2], 'PX', ARGV[3], 'NX') then return 2 end
return 0
"""
