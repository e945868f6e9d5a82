import { createHash } from "node:crypto";

/**
 * The Lua scripts, one per contract operation. Each touches exactly one key (KEYS[1]), so it runs unchanged
 * on Redis Cluster. The record is one hash:
 *
 * | field         | value                                                        |
 * | ------------- | ------------------------------------------------------------ |
 * | `state`       | `in-flight` or `completed`                                   |
 * | `token`       | the owner token (in flight only)                             |
 * | `fingerprint` | the request fingerprint                                      |
 * | `lease_until` | end of the lease, epoch ms on the server clock (in flight)   |
 * | `response`    | the core's encoded response (completed; absent when `null`)  |
 *
 * The record's TTL is the key's own `PEXPIRE`, so Redis drops it when it ends and every lookup after that
 * sees no record. Every script starts with the same prelude: it reads the server clock (`TIME`, allowed in
 * Redis 7 scripts because they replicate their effects) and refuses to run when ARGV[1], a deadline on the
 * server clock, has passed: a call the client already gave up on never applies later. Every reply starts
 * with the server time, from which the store learns the server clock.
 *
 * Out of memory (`maxmemory` with `noeviction`), Redis refuses a script's data-adding command only while
 * the script has written nothing yet. `begin` writes with `HSET` first, so a new claim is refused cleanly;
 * `complete` and `extend` start with `PEXPIRE`, so requests already running still renew and complete
 * instead of running again later.
 */
const PRELUDE = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local deadline = tonumber(ARGV[1])
if deadline > 0 and now > deadline then
  return redis.error_reply('IDEMPOTENCY_LATE ' .. string.format('%.0f', now))
end
local key = KEYS[1]
local function owned(token)
  local record = redis.call('HMGET', key, 'state', 'token')
  return record[1] == 'in-flight' and record[2] == token
end
`;

/** ARGV: deadline, token, fingerprint, leaseMs, ttlMs, allowTakeover ("1"/"0"). */
const BEGIN = `${PRELUDE}
local record = redis.call('HMGET', key, 'state', 'fingerprint', 'lease_until', 'response')
if record[1] == 'completed' then
  return {now, 'completed', record[2], record[4]}
end
local takeover = 0
if record[1] == 'in-flight' then
  local remaining = tonumber(record[3]) - now
  if remaining > 0 or ARGV[6] ~= '1' then
    return {now, 'in-flight', record[2], math.max(remaining, 0)}
  end
  takeover = 1
end
local leaseMs = tonumber(ARGV[4])
-- Overwrites every field of an expired in-flight record (a completed one is never taken over).
redis.call('HSET', key, 'state', 'in-flight', 'token', ARGV[2], 'fingerprint', ARGV[3],
  'lease_until', string.format('%.0f', now + leaseMs))
redis.call('PEXPIRE', key, string.format('%.0f', math.max(leaseMs, tonumber(ARGV[5]))))
return {now, 'claimed', takeover}
`;

/** ARGV: deadline, token, hasResponse ("1"/"0"), response bytes, ttlMs. */
const COMPLETE = `${PRELUDE}
if not owned(ARGV[2]) then return {now, 0} end
redis.call('PEXPIRE', key, ARGV[5])
redis.call('HDEL', key, 'token', 'lease_until')
if ARGV[3] == '1' then
  redis.call('HSET', key, 'state', 'completed', 'response', ARGV[4])
else
  redis.call('HSET', key, 'state', 'completed')
end
return {now, 1}
`;

/** ARGV: deadline, token, leaseMs. Never cuts the TTL short; pushes it out to the new lease end if needed. */
const EXTEND = `${PRELUDE}
if not owned(ARGV[2]) then return {now, 0} end
local leaseMs = tonumber(ARGV[3])
redis.call('PEXPIRE', key, string.format('%.0f', math.max(redis.call('PTTL', key), leaseMs)))
redis.call('HSET', key, 'lease_until', string.format('%.0f', now + leaseMs))
return {now, 1}
`;

/** ARGV: deadline, token. */
const RELEASE = `${PRELUDE}
if not owned(ARGV[2]) then return {now, 0} end
redis.call('DEL', key)
return {now, 1}
`;

/** ARGV: deadline. Returns now, state, fingerprint, token, lease remaining, response, TTL remaining. */
const GET = `${PRELUDE}
local record = redis.call('HMGET', key, 'state', 'fingerprint', 'token', 'lease_until', 'response')
if not record[1] then return {now} end
local lease = 0
if record[1] == 'in-flight' then lease = math.max(tonumber(record[4]) - now, 0) end
return {now, record[1], record[2], record[3], lease, record[5], redis.call('PTTL', key)}
`;

/** ARGV: deadline. */
const DELETE = `${PRELUDE}
return {now, redis.call('DEL', key)}
`;

/** A script with the SHA1 that `EVALSHA` runs it by. */
export interface Script {
  readonly name: string;
  readonly source: string;
  readonly sha: string;
}

function script(name: string, source: string): Script {
  return { name, source, sha: createHash("sha1").update(source).digest("hex") };
}

export const scripts = {
  begin: script("begin", BEGIN),
  complete: script("complete", COMPLETE),
  extend: script("extend", EXTEND),
  release: script("release", RELEASE),
  get: script("get", GET),
  delete: script("delete", DELETE),
} as const;
