//! Lua scripts: each multi-key change of session or token state is one atomic script, so limits,
//! rotations and revocations hold when several service instances share one Redis.
//!
//! Keys a script derives itself (the sessions it evicts) are built from prefixes passed in ARGV
//! that carry the same hash tag as its KEYS (see [`crate::session_store::keys`]), so every key a script
//! touches is in one slot, on one primary of a Redis Cluster too.
use redis::Script;
use std::sync::LazyLock;

/// How a session ends, written once and put in front of every script that ends sessions:
/// its record goes, it leaves the user's two indexes, and, if it was live, why it ended is kept
/// `ttl` seconds. Called for a session whose record has gone already, it only forgets the index
/// entries. Every key it is given carries the script's hash tag. Returns whether it was live.
const END_A_SESSION: &str = r#"
local function end_session(sid, session, ended, user_sessions, activity, reason, ttl)
  local live = redis.call('DEL', session) == 1
  redis.call('ZREM', user_sessions, sid)
  redis.call('ZREM', activity, sid)
  if live then redis.call('SET', ended, reason, 'EX', ttl) end
  return live
end
"#;

/// Whether a session takes a token of user `uid`, written once for the access check and the
/// rotation: given what its record holds (nothing when it has gone), `refusal` answers why not
/// (`{"ended", reason}` or `{"invalid"}`), or nil when it is live for that user: its record
/// exists, is theirs, was opened (or last moved) under their current credential version, and has
/// not been idle past the timeout.
const CHECK_A_SESSION: &str = r#"
local function refusal(owner, seen, cv, uid, ended, credential, now, idle)
  if not owner then return {'ended', redis.call('GET', ended) or 'expired'} end
  if owner ~= uid then return {'invalid'} end
  if tonumber(cv or '0') < tonumber(redis.call('GET', credential) or '0') then
    return {'ended', 'password_changed'}
  end
  if now - tonumber(seen) > idle then return {'ended', 'expired'} end
  return nil
end
"#;

/// A script whose `body` calls the shared `functions` ([`END_A_SESSION`], [`CHECK_A_SESSION`]).
fn script(functions: &[&str], body: &str) -> Script {
    Script::new(&(functions.concat() + body))
}

/// Ends one session of a user if it exists (a session of another user is left alone).
/// KEYS: session, ended, activity, user_sessions. ARGV: sid, reason, ended_ttl_s, uid.
/// Returns 1 when it ended the session, 0 when it was already gone or is not that user's.
pub static END_SESSION: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[END_A_SESSION],
        r#"
if redis.call('HGET', KEYS[1], 'uid') ~= ARGV[4] then return 0 end
end_session(ARGV[1], KEYS[1], KEYS[2], KEYS[4], KEYS[3], ARGV[2], ARGV[3])
return 1
"#,
    )
});

/// Ends every session of a user, except one if given. With a credential version (a password
/// change), first raises the user's version to it, so no login that verified the old password
/// can open a session afterwards, and moves the kept session to it.
/// KEYS: user_sessions, activity, credential. ARGV: reason, ended_ttl_s, session_prefix,
/// ended_prefix, except_sid (or ""), credential_version (or "").
/// Returns the ended session ids.
pub static END_USER_SESSIONS: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[END_A_SESSION],
        r#"
if ARGV[6] ~= '' then
  local version = tonumber(ARGV[6])
  if version > tonumber(redis.call('GET', KEYS[3]) or '0') then
    redis.call('SET', KEYS[3], ARGV[6], 'EX', ARGV[2])
  else
    redis.call('EXPIRE', KEYS[3], ARGV[2])
  end
  if ARGV[5] ~= '' and redis.call('EXISTS', ARGV[3] .. ARGV[5]) == 1 then
    redis.call('HSET', ARGV[3] .. ARGV[5], 'cv', ARGV[6])
  end
end
local ended = {}
for _, s in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if s ~= ARGV[5]
     and end_session(s, ARGV[3] .. s, ARGV[4] .. s, KEYS[1], KEYS[2], ARGV[1], ARGV[2]) then
    table.insert(ended, s)
  end
end
return ended
"#,
    )
});

/// A user's live sessions, newest first: those whose record exists, opened under the user's
/// current credential version and not idle past the timeout (read only).
/// KEYS: user_sessions, credential. ARGV: session_prefix, now_ms, idle_ms.
/// Returns {sid, created, seen, ip, user_agent, …}.
pub static LIST_SESSIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
local now, idle = tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for _, s in ipairs(redis.call('ZREVRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', ARGV[1] .. s, 'created', 'seen', 'ip', 'ua', 'cv')
  if f[1] and tonumber(f[5] or '0') >= current and now - tonumber(f[2]) <= idle then
    table.insert(out, s)
    table.insert(out, f[1])
    table.insert(out, f[2])
    table.insert(out, f[3] or '')
    table.insert(out, f[4] or '')
  end
end
return out
"#,
    )
});

/// Opens a session under the per-user limit, unless the user's password changed after the
/// login verified it (its credential version is older than the user's current one).
/// KEYS: user_sessions, activity, new session, credential.
/// ARGV: sid, uid, role, now_ms, max, policy (`evict_oldest` | `reject`), session_ttl_s,
///       session_prefix, ended_prefix, ended_ttl_s, idle_ms, access_jti, refresh_jti,
///       credential_version, ip, user_agent.
/// Sessions already idle past the timeout do not count: they are ended as expired first.
/// Returns {"ok", "e:<evicted sid>"…, "x:<expired sid>"…}, {"reject"} or {"stale"}.
pub static OPEN_SESSION: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[END_A_SESSION],
        r#"
local current = tonumber(redis.call('GET', KEYS[4]) or '0')
if tonumber(ARGV[14]) < current then return {'stale'} end
local sid, uid, role, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local max, policy, ttl = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local sess_prefix, ended_prefix, ended_ttl = ARGV[8], ARGV[9], ARGV[10]
local idle = tonumber(ARGV[11])
local result = {'ok'}
local function finish(s, reason)
  end_session(s, sess_prefix .. s, ended_prefix .. s, KEYS[1], KEYS[2], reason, ended_ttl)
end
-- Forget members whose record has gone; end those of an older credential version and those
-- idle past the timeout.
for _, s in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local f = redis.call('HMGET', sess_prefix .. s, 'seen', 'cv')
  local seen = f[1]
  if not seen then
    finish(s, 'expired')
  elseif tonumber(f[2] or '0') < current then
    finish(s, 'password_changed')
  elseif now - tonumber(seen) > idle then
    finish(s, 'expired')
    table.insert(result, 'x:' .. s)
  end
end
local live = redis.call('ZCARD', KEYS[1])
if live >= max then
  if policy == 'reject' then return {'reject'} end
  for _, s in ipairs(redis.call('ZRANGE', KEYS[1], 0, live - max)) do
    finish(s, 'evicted')
    table.insert(result, 'e:' .. s)
  end
end
redis.call('HSET', KEYS[3], 'uid', uid, 'role', role, 'created', now, 'seen', now,
           'ajti', ARGV[12], 'rjti', ARGV[13], 'cv', ARGV[14], 'ip', ARGV[15], 'ua', ARGV[16])
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[1], now, sid)
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now, sid)
redis.call('EXPIRE', KEYS[2], ttl)
return result
"#,
    )
});

/// Checks a token (access, or refresh for introspection) against its session and marks the
/// session active. A session opened under an older credential version than the user's current
/// one is refused.
/// KEYS: session, ended, activity, credential. ARGV: sid, uid, jti, now_ms, idle_ms, the field
/// holding the session's current jti of the token's kind (`ajti` or `rjti`).
/// Returns {"ok", credential_version}, {"ended", reason}, {"superseded"} or {"invalid"}.
pub static CHECK_ACCESS: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[CHECK_A_SESSION],
        r#"
local f = redis.call('HMGET', KEYS[1], 'uid', ARGV[6], 'seen', 'cv')
local now = tonumber(ARGV[4])
local refused = refusal(f[1], f[3], f[4], ARGV[2], KEYS[2], KEYS[4], now, tonumber(ARGV[5]))
if refused then return refused end
if f[2] ~= ARGV[3] then return {'superseded'} end
-- Activity is recorded at most once a second: the idle timeout needs no finer grain, and a
-- busy session then costs one read, not three writes, per request. An access token in use is
-- activity; a refresh token looked at by another service is not.
if ARGV[6] == 'ajti' and now - tonumber(f[3]) >= 1000 then
  redis.call('HSET', KEYS[1], 'seen', now)
  redis.call('ZADD', KEYS[3], now, ARGV[1])
end
return {'ok', f[4] or '0'}
"#,
    )
});

/// Rotates a session's refresh token, detecting reuse; refuses a session of an older credential
/// version, as the access check does.
/// KEYS: session, ended, activity, user_sessions, credential.
/// ARGV: sid, uid, presented_jti, new_access_jti, new_refresh_jti, now_ms, idle_ms, grace_ms,
///       successor (the new pair, kept for the grace window), session_ttl_s, ended_ttl_s.
/// Returns {"ok", credential_version}, {"grace", successor, credential_version}, {"reuse"},
/// {"ended", reason} or {"invalid"}.
pub static ROTATE_REFRESH: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[CHECK_A_SESSION, END_A_SESSION],
        r#"
local f = redis.call('HMGET', KEYS[1], 'uid', 'rjti', 'prev_rjti', 'rotated', 'succ', 'seen', 'cv')
local now, idle, grace = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local refused = refusal(f[1], f[6], f[7], ARGV[2], KEYS[2], KEYS[5], now, idle)
if refused then return refused end
if f[2] == ARGV[3] then
  redis.call('HSET', KEYS[1], 'prev_rjti', ARGV[3], 'rotated', now, 'ajti', ARGV[4],
             'rjti', ARGV[5], 'seen', now, 'succ', (grace > 0) and ARGV[9] or '')
  redis.call('EXPIRE', KEYS[1], ARGV[10])
  -- The user's set of sessions lives as long as its longest-lived session.
  redis.call('EXPIRE', KEYS[4], ARGV[10])
  redis.call('ZADD', KEYS[3], now, ARGV[1])
  redis.call('EXPIRE', KEYS[3], ARGV[10])
  return {'ok', f[7] or '0'}
end
if grace > 0 and f[3] == ARGV[3] and now - tonumber(f[4]) <= grace and f[5] and f[5] ~= '' then
  return {'grace', f[5], f[7] or '0'}
end
end_session(ARGV[1], KEYS[1], KEYS[2], KEYS[4], KEYS[3], 'refresh_reuse', ARGV[11])
return {'reuse'}
"#,
    )
});

/// Ends one session of a user if it has been idle too long (used by the sweep; safe to race).
/// KEYS: session, ended, activity, user_sessions. ARGV: sid, now_ms, idle_ms, ended_ttl_s.
/// Returns 1 when this call ended it, else 0.
pub static EXPIRE_IF_IDLE: LazyLock<Script> = LazyLock::new(|| {
    script(
        &[END_A_SESSION],
        r#"
local seen = redis.call('HGET', KEYS[1], 'seen')
if seen and tonumber(ARGV[2]) - tonumber(seen) <= tonumber(ARGV[3]) then return 0 end
-- Idle past the timeout, or its record gone (then its index entries are only forgotten).
return end_session(ARGV[1], KEYS[1], KEYS[2], KEYS[4], KEYS[3], 'expired', ARGV[4]) and 1 or 0
"#,
    )
});

/// Asks to check one login attempt's password. An attempt is counted (as pending) before its
/// password is checked, unless a counter is at its limit (locked: not counted) or every slot
/// left is held by attempts still being checked (wait: not counted, ask again). So however
/// many attempts race, at most the allowed number are ever checked.
/// KEYS: failures_from_address, failures, pending_from_address, pending.
/// ARGV: attempt_id, now_ms, max_per_address (0 = none), max_per_account (0 = none), stale_ms.
/// Returns {"ok"}, {"wait"} or {"locked", seconds_left}.
pub static BEGIN_LOGIN_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now, stale = tonumber(ARGV[2]), tonumber(ARGV[5])
local max_addr, max_acct = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - stale)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - stale)
local fa = tonumber(redis.call('GET', KEYS[1]) or '0')
local fc = tonumber(redis.call('GET', KEYS[2]) or '0')
if max_addr > 0 and fa >= max_addr then
  return {'locked', tostring(math.max(redis.call('TTL', KEYS[1]), 1))}
end
if max_acct > 0 and fc >= max_acct then
  return {'locked', tostring(math.max(redis.call('TTL', KEYS[2]), 1))}
end
local pa, pc = redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[4])
if (max_addr > 0 and fa + pa >= max_addr) or (max_acct > 0 and fc + pc >= max_acct) then
  return {'wait'}
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('PEXPIRE', KEYS[3], stale)
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('PEXPIRE', KEYS[4], stale)
return {'ok'}
"#,
    )
});

/// Ends an admitted attempt: a failure counts on both counters (fixed windows from their first
/// failure); a success takes its pending slot back and resets the address's counter; an
/// abandoned attempt only gives its slot back.
/// A failure also names both counters in the email's set of counters (kept a whole window past
/// the last failure, so it outlives them), which lifting the lockout reads.
/// KEYS: failures_from_address, failures, pending_from_address, pending, counters.
/// ARGV: attempt_id, outcome (`failed` | `succeeded` | `abandoned`), window_s.
/// Returns the address's failures in its window.
pub static END_LOGIN_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[2] == 'failed' then
  local n = redis.call('INCR', KEYS[1])
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
  redis.call('INCR', KEYS[2])
  if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[3]) end
  redis.call('SADD', KEYS[5], KEYS[1], KEYS[2])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
  return n
end
if ARGV[2] == 'succeeded' then redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Lifts an email's lockout (an administrator's decision): deletes every failure counter the
/// email's set names, the account's own counter (which a version before the set may have
/// left), and the set. Attempts being checked keep their slots. Every key shares the email's
/// hash tag, so on a Redis Cluster they are on one node.
/// KEYS: counters, failures (the unknown clients' pool). Returns how many counters were
/// deleted.
pub static LIFT_LOCKOUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if key ~= KEYS[2] then n = n + redis.call('DEL', key) end
end
n = n + redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[1])
return n
"#,
    )
});

/// One request against an address's rate limit (GCRA: a bucket of `burst` refilled at one per
/// `interval`), shared by every instance on this Redis.
/// KEYS: rate. ARGV: now_ms, interval_ms, burst.
/// Returns 0 when allowed, else the milliseconds until the next request would be.
pub static TAKE_RATE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now, interval, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or ARGV[1]), now)
local next_tat = tat + interval
local allowed_at = next_tat - burst * interval
if allowed_at > now then return math.ceil(allowed_at - now) end
redis.call('SET', KEYS[1], tostring(next_tat), 'PX', math.ceil(next_tat - now))
return 0
"#,
    )
});
