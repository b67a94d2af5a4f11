"""The Lua scripts of cluster membership (run with EVAL, each atomic in Redis).

Their keys are those of :mod:`vinespy.cluster.keys`; CLEANUP and FORGET
derive ``sessions:{bare}``, ``cluster:sets:{sid}`` and (CLEANUP)
``cluster:node:{id}`` themselves, spelt
as :func:`~vinespy.cluster.keys.sessions` and
:func:`~vinespy.cluster.keys.sets` spell them.
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: nodes, node info, this node's acks, then the acks of each node this
# one waits on. ARGV: node, incarnation, sessions, acked inbox id, dead ms,
# this node's field in others' acks, n, then n (sender, confirmation) pairs
# (cluster/confirm.py), then the node id of each acks key after the third.
# Renews this node's heartbeat unless the node was removed (declared dead,
# or Redis lost its data): then 'gone'. Else writes its confirmations and
# returns {'ok', {nodes now silent too long}, {what each awaited node
# confirmed of ours, prefixed by '-' if that node is not registered}}.
HEARTBEAT = _NOW + """
if redis.call('HGET', KEYS[2], 'incarnation') ~= ARGV[2]
    or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {'gone'}
end
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[2], 'sessions', ARGV[3], 'acked', ARGV[4])
redis.call('DEL', KEYS[3])
local n = tonumber(ARGV[7])
for i = 8, 7 + 2 * n, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
local dead = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if now - tonumber(all[i + 1]) > tonumber(ARGV[5]) then dead[#dead + 1] = all[i] end
end
local confirmed = {}
for i = 4, #KEYS do
  local c = redis.call('HGET', KEYS[i], ARGV[6]) or ''
  if redis.call('HEXISTS', KEYS[1], ARGV[8 + 2 * n + i - 4]) == 0 then c = '-' .. c end
  confirmed[#confirmed + 1] = c
end
return {'ok', dead, confirmed}
"""

# KEYS: nodes, node info. ARGV: node, incarnation, pid, host, sessions.
REGISTER = _NOW + """
redis.call('HSET', KEYS[1], ARGV[1], now)
redis.call('HSET', KEYS[2], 'incarnation', ARGV[2], 'pid', ARGV[3], 'host', ARGV[4],
           'sessions', ARGV[5], 'started', now)
return now
"""

# KEYS: nodes, node info, node jids, node inbox, node acks. ARGV: node, dead ms,
# mode, incarnation, the caller's field in the node's acks, fresh ms.
# Removes a node and its routing entries (with each one's set of shared set
# field members) at once and returns them, as {full, record, {members}}, with the
# inbox entries it had not read whose senders will not send them again (a
# sender of entries with a base 'b' that is beating (its heartbeat younger
# than fresh ms: not dying with this node) keeps them until confirmed, and
# re-routes them itself once it sees the node gone); its confirmations are
# kept a minute for those senders (the caller's is returned: it re-routes
# at once what the node did not confirm of its own): mode 'dead' only if it is still silent
# (so of several nodes cleaning up concurrently exactly one gets them),
# mode 'self' for a node's own previous incarnation (refused with 'busy'
# while another incarnation of the same node id is alive), 'force' for one
# known to be dead (its process is gone).
CLEANUP = _NOW + """
local hb = redis.call('HGET', KEYS[1], ARGV[1])
local inc = redis.call('HGET', KEYS[2], 'incarnation')
if ARGV[3] == 'dead' then
  if not hb or now - tonumber(hb) <= tonumber(ARGV[2]) then return false end
elseif ARGV[3] == 'self' and hb and inc and inc ~= ARGV[4]
    and now - tonumber(hb) <= tonumber(ARGV[2]) then
  return {'busy', tostring(now - tonumber(hb)), redis.call('HGET', KEYS[2], 'pid') or '',
          redis.call('HGET', KEYS[2], 'host') or ''}
end
local acked = redis.call('HGET', KEYS[2], 'acked') or '0-0'
redis.call('HDEL', KEYS[1], ARGV[1])
local removed = {}
for _, full in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local slash = string.find(full, '/', 1, true)
  if slash then
    local key = 'sessions:' .. string.sub(full, 1, slash - 1)
    local res = string.sub(full, slash + 1)
    local v = redis.call('HGET', key, res)
    if v then
      local ok, rec = pcall(cjson.decode, v)
      if ok and type(rec) == 'table' and rec.node == ARGV[1] then
        redis.call('HDEL', key, res)
        local dkey = 'cluster:sets:' .. tostring(rec.sid)
        removed[#removed + 1] = {full, v, redis.call('SMEMBERS', dkey)}
        redis.call('DEL', dkey)
      end
    end
  end
end
local rest = {}
for _, e in ipairs(redis.call('XRANGE', KEYS[4], '(' .. acked, '+')) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  local beat = f.b and f.n and redis.call('HGET', KEYS[1], f.n)
  local kept = beat and now - tonumber(beat) <= tonumber(ARGV[6])
    and redis.call('HGET', 'cluster:node:' .. f.n, 'incarnation') == f.e
  if not kept then rest[#rest + 1] = e end
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('PEXPIRE', KEYS[5], 60000)
return {'done', removed, rest, redis.call('HGET', KEYS[5], ARGV[5]) or ''}
"""

# KEYS: sessions:{bare}, node jids. ARGV: resource, node, full.
# A routing entry this node no longer has a session for (resync).
FORGET = """
redis.call('SREM', KEYS[2], ARGV[3])
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then
  local ok, rec = pcall(cjson.decode, v)
  if ok and type(rec) == 'table' and rec.node == ARGV[2] then
    redis.call('HDEL', KEYS[1], ARGV[1])
    redis.call('DEL', 'cluster:sets:' .. tostring(rec.sid))
  end
end
return 0
"""
