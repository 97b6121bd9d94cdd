package redisstore

import "github.com/redis/go-redis/v9"

// The scripts read the time from Redis (TIME), so that the instances'
// clocks never have to agree: a lease's expiry is Redis's time plus the
// lease. Each one is a single round trip (EVALSHA, falling back to EVAL).

// nowMs is the Lua prologue that sets now, in milliseconds, from Redis.
const nowMs = `local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`

// admitScript: KEYS = user set, (user, address) set, instance's slot
// records; ARGV = member, per-user cap, per-(user, address) cap (0: off),
// lease in ms, record. It prunes the expired members of both sets, and
// adds the member to both if both are under their caps. It returns
// {admitted 0/1, user count, (user, address) count or -1 when off}; the
// counts are before the admit. A member already held is admitted again
// without being counted twice (a retried call).
var admitScript = redis.NewScript(nowMs + `
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local nu = redis.call('ZCARD', KEYS[1])
local ni = -1
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return {1, nu - 1, ni}
end
if nu >= tonumber(ARGV[2]) then
  return {0, nu, ni}
end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  ni = redis.call('ZCARD', KEYS[2])
  if ni >= tonumber(ARGV[3]) then
    return {0, nu, ni}
  end
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
redis.call('PEXPIRE', KEYS[3], ttl)
return {1, nu, ni}
`)

// releaseScript: KEYS = user set, (user, address) set, slot records;
// ARGV = member. Releasing a member not held does nothing.
var releaseScript = redis.NewScript(`
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
`)

// refreshScript renews the leases of an instance's slots and, after
// Redis lost them (a restart), writes them again: KEYS = slot records,
// then a user set and a (user, address) set per slot; ARGV = lease in ms,
// then a member and a record per slot. It returns the slots written.
var refreshScript = redis.NewScript(nowMs + `
local ttl = tonumber(ARGV[1])
local n = 0
for i = 2, #KEYS, 2 do
  local m = ARGV[i]
  redis.call('ZADD', KEYS[i], now + ttl, m)
  redis.call('ZADD', KEYS[i + 1], now + ttl, m)
  redis.call('PEXPIRE', KEYS[i], ttl)
  redis.call('PEXPIRE', KEYS[i + 1], ttl)
  redis.call('HSET', KEYS[1], m, ARGV[i + 1])
  n = n + 1
end
redis.call('PEXPIRE', KEYS[1], ttl)
return n
`)

// clearScript removes every slot an instance recorded: KEYS = its slot
// records. An instance runs it at start, so that a restart with the
// same instance_id does not wait for its old leases to expire. The sets
// a slot is in are named in its record (standalone Redis or Sentinel:
// the keys need not be declared for a cluster's hash slots).
var clearScript = redis.NewScript(`
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  local r = cjson.decode(all[i + 1])
  redis.call('ZREM', r.user_key, all[i])
  redis.call('ZREM', r.user_addr_key, all[i])
  n = n + 1
end
redis.call('DEL', KEYS[1])
return n
`)
