//! The Lua scripts: each write a room sees is one script, atomic in Redis.
//! Each script names its KEYS and ARGV in locals on its first lines; the
//! Rust side passes them in that order.

use redis::Script;

pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) direct: Script,
    pub(super) direct_message: Script,
    pub(super) set_retained: Script,
    pub(super) clear_retained: Script,
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) set_state: Script,
    pub(super) take_will: Script,
    pub(super) defer_will: Script,
    pub(super) reassert: Script,
    pub(super) beat: Script,
    pub(super) claim_due: Script,
    pub(super) rooms_page: Script,
    pub(super) stream_marks: Script,
}

impl Scripts {
    /// Every script, ready to run (sent by hash, loaded on first use). With
    /// `sharded`, events go out by sharded pub/sub (`SPUBLISH`, for a
    /// cluster: the channel is in the room's slot) instead of `PUBLISH`.
    pub(super) fn load(sharded: bool) -> Scripts {
        let script = |lua: &str| {
            if sharded {
                Script::new(&lua.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',"))
            } else {
                Script::new(lua)
            }
        };
        Scripts {
            append: script(APPEND),
            stream_marks: script(STREAM_MARKS),
            rooms_page: script(ROOMS_PAGE),
            claim_due: script(CLAIM_DUE),
            direct_message: script(DIRECT_MESSAGE),
            direct: script(DIRECT),
            set_retained: script(SET_RETAINED),
            clear_retained: script(CLEAR_RETAINED),
            join: script(JOIN),
            leave: script(LEAVE),
            set_state: script(SET_STATE),
            take_will: script(TAKE_WILL),
            defer_will: script(DEFER_WILL),
            reassert: script(REASSERT),
            beat: script(BEAT),
        }
    }
}

/// Lua shared by the keyed writes: `recall` answers a retry with the first
/// attempt's id (an empty fingerprint means the write carries no key), or
/// `key_reused` when the key named a different write; `remember` keeps the
/// id and the write's fingerprint for the history TTL.
macro_rules! once_fn {
    () => {
        r#"
local function recall(k, fp)
  if fp == '' then return nil end
  local v = redis.call('GET', k)
  if not v then return nil end
  local sp = string.find(v, ' ', 1, true)
  if not sp or string.sub(v, sp + 1) ~= fp then return {err = 'key_reused'} end
  return string.sub(v, 1, sp - 1)
end
local function remember(k, fp, id, ttl)
  if fp ~= '' then redis.call('SET', k, id .. ' ' .. fp, 'PX', ttl) end
end
"#
    };
}

/// Lua shared by the scripts that append to a stream. History is trimmed on
/// write: XADD drops what passed the history's age (`MINID`), XTRIM what is
/// over the size limits. Trimmed entries are read first, for their bytes and
/// for the gap marker: the newest dropped id, kept in its own key because
/// Redis 7.0 records `max-deleted-entry-id` only on XDEL. Then the stream's
/// idle expiry is refreshed, so a room nobody writes to costs no work: its
/// history ages out on read, and the whole stream expires with its newest entry.
macro_rules! append_fn {
    () => {
        concat!(
            r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function late(deadline)
  return now_ms() > tonumber(deadline)
end
"#,
            once_fn!(),
            r#"
local function entry_size(e) return #e[2][2] + #e[2][4] end
-- The smallest id after `id`: an XTRIM MINID threshold that drops `id` too.
local function after(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. (tonumber(seq) + 1)
end
local function append(stream, bytes, maxlen, p, s, ttl, maxbytes, marker)
  local total = tonumber(redis.call('GET', bytes) or '0')
  local dropped = nil
  local cutoff = now_ms() - tonumber(ttl)
  local id
  if cutoff > 0 then
    local aged = redis.call('XRANGE', stream, '-', '(' .. cutoff .. '-0')
    for _, e in ipairs(aged) do
      total = total - entry_size(e)
      dropped = e[1]
    end
    id = redis.call('XADD', stream, 'MINID', cutoff .. '-0', '*', 'p', p, 's', s)
  else
    id = redis.call('XADD', stream, '*', 'p', p, 's', s)
  end
  total = total + #p + #s
  local len = redis.call('XLEN', stream)
  if len > tonumber(maxlen) then
    local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', len - tonumber(maxlen))
    for _, e in ipairs(old) do
      total = total - entry_size(e)
      dropped = e[1]
    end
    redis.call('XTRIM', stream, 'MAXLEN', tonumber(maxlen))
  end
  while total > tonumber(maxbytes) do
    local old = redis.call('XRANGE', stream, '-', '+', 'COUNT', 16)
    if #old == 0 then total = 0 break end
    local last = nil
    for _, e in ipairs(old) do
      if total <= tonumber(maxbytes) then break end
      total = total - entry_size(e)
      last = e[1]
    end
    if last then
      dropped = last
      redis.call('XTRIM', stream, 'MINID', after(last))
    end
  end
  if total < 0 then total = 0 end
  redis.call('SET', bytes, total, 'PX', ttl)
  if dropped then
    redis.call('SET', marker, dropped, 'PX', ttl)
  else
    redis.call('PEXPIRE', marker, ttl)
  end
  redis.call('PEXPIRE', stream, ttl)
  return id
end
"#
        )
    };
}

/// Appends an event to the stream and publishes it. The event's JSON arrives
/// in two halves around its id, which XADD assigns.
pub(super) const APPEND: &str = concat!(
    append_fn!(),
    r#"
local stream, trimmed, bytes, once = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local maxlen, head, tail, ttl, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxbytes, deadline, fingerprint = ARGV[6], ARGV[7], ARGV[8]
local done = recall(once, fingerprint)
if done then return done end
if late(deadline) then return {err = 'late'} end
local id = append(stream, bytes, maxlen, head, tail, ttl, maxbytes, trimmed)
redis.call('PUBLISH', channel, head .. id .. tail)
remember(once, fingerprint, id, ttl)
return id
"#
);

/// A stream's last id, first entry id and newest trimmed id (the gap
/// marker), `''` for each it lacks; nil when the stream does not exist.
pub(super) const STREAM_MARKS: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
local last, first = '', ''
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
  if info[i] == 'first-entry' and type(info[i + 1]) == 'table' then first = info[i + 1][1] end
end
return {last, first, redis.call('GET', KEYS[2]) or ''}
"#;

/// One page of the room index (SSCAN from ARGV[1], about ARGV[2] rooms) with
/// each room's peer and topic counts; rooms found empty leave the index.
/// Returns the next cursor, then room, peers, topics for each room.
pub(super) const ROOMS_PAGE: &str = r#"
local page = redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', tonumber(ARGV[2]))
local out = {page[1]}
for _, room in ipairs(page[2]) do
  local peers = redis.call('HLEN', ARGV[3] .. room .. '}:presence')
  local topics = redis.call('HLEN', ARGV[3] .. room .. '}:retained')
  if peers == 0 and topics == 0 then
    redis.call('SREM', KEYS[1], room)
  else
    out[#out + 1] = room
    out[#out + 1] = peers
    out[#out + 1] = topics
  end
end
return out
"#;

/// Claims the members of the deadline set whose time is at or before
/// ARGV[1] (among the first ARGV[2]), pushing each forward by the lease
/// ARGV[3]: another sweeper takes one up only if the claimer fails to finish
/// it. Returns the set's earliest time after the claim (when ARGV[5] is 1;
/// `''` otherwise or when it is empty), then the claimed members. Dead instances (`i:`) only when
/// ARGV[4] is 1: an instance just back from a break leaves them to others
/// (or to itself a TTL later).
pub(super) const CLAIM_DUE: &str = r#"
local due_set = KEYS[1]
local now, count, lease, instances, want_next = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local due = redis.call('ZRANGEBYSCORE', due_set, '-inf', now, 'LIMIT', 0, tonumber(count))
local claimed = {''}
for _, m in ipairs(due) do
  if instances == '1' or string.sub(m, 1, 2) ~= 'i:' then
    redis.call('ZADD', due_set, tonumber(now) + tonumber(lease), m)
    claimed[#claimed + 1] = m
  end
end
if want_next == '1' then
  local first = redis.call('ZRANGE', due_set, 0, 0, 'WITHSCORES')
  if first[2] then claimed[1] = first[2] end
end
return claimed
"#;

/// Publishes a direct message if its recipient is present, with an id taken
/// from the room's own sequence: the stream's last id is moved on (XSETID, or
/// an empty stream made with that id) without an entry, so the id is unique
/// in the room and ordered with its broadcasts, whatever the relays' clocks.
/// The event's JSON arrives in two halves around its id.
pub(super) const DIRECT_MESSAGE: &str = concat!(
    once_fn!(),
    r#"
local presence, stream, once = KEYS[1], KEYS[2], KEYS[3]
local to, channel, head, tail, ttl, fingerprint = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local done = recall(once, fingerprint)
if done then return done end
if redis.call('HEXISTS', presence, to) == 0 then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms, seq = now, 0
local exists = redis.call('EXISTS', stream) == 1
if exists then
  local info = redis.call('XINFO', 'STREAM', stream)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
      lms, lseq = tonumber(lms), tonumber(lseq)
      if lms >= now then ms, seq = lms, lseq + 1 end
    end
  end
end
local id = ms .. '-' .. seq
if exists then
  redis.call('XSETID', stream, id)
else
  redis.call('XADD', stream, 'MAXLEN', '0', id, 'p', '', 's', '')
  redis.call('PEXPIRE', stream, ttl)
end
redis.call('PUBLISH', channel, head .. id .. tail)
remember(once, fingerprint, id, ttl)
return id
"#
);

/// Publishes an internal event for one present peer (a token refresh).
pub(super) const DIRECT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Stores a retained value (within the topic limit), appends and publishes its
/// status event. The stored record holds the event id, for compare-and-clear.
pub(super) const SET_RETAINED: &str = concat!(
    append_fn!(),
    r#"
local retained, stream, rooms, bytes, once, trimmed, due = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local topic, max_topics, maxlen, head, tail, ttl, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local record_head, record_tail, room, maxbytes = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local deadline, fingerprint, expires, from = ARGV[12], ARGV[13], ARGV[14], ARGV[15]
local done = recall(once, fingerprint)
if done then return done end
if late(deadline) then return {err = 'late'} end
if redis.call('HEXISTS', retained, topic) == 0 and redis.call('HLEN', retained) >= tonumber(max_topics) then
  return {err = 'too_many_topics'}
end
local id = append(stream, bytes, maxlen, head, tail, ttl, maxbytes, trimmed)
redis.call('HSET', retained, topic, record_head .. id .. record_tail)
redis.call('SADD', rooms, room)
if expires ~= '' then
  redis.call('ZADD', due, tonumber(expires), 'x:' .. cjson.encode({room, topic, id, from}))
end
redis.call('PUBLISH', channel, head .. id .. tail)
remember(once, fingerprint, id, ttl)
return id
"#
);

/// Clears a retained value that has not lapsed (or, with an expected id, exactly
/// that value), appending and publishing a status event with data null.
pub(super) const CLEAR_RETAINED: &str = concat!(
    append_fn!(),
    r#"
local retained, stream, bytes, once, trimmed, presence, rooms = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local topic, expected, maxlen, head, tail, ttl, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local now, maxbytes, deadline, fingerprint, room = ARGV[8], ARGV[9], ARGV[10], ARGV[11], ARGV[12]
local done = recall(once, fingerprint)
if done then return done end
if late(deadline) then return {err = 'late'} end
local cur = redis.call('HGET', retained, topic)
if not cur then return false end
local rec = cjson.decode(cur)
if expected ~= '' then
  if rec.id ~= expected then return false end
elseif rec.x ~= nil and rec.x ~= cjson.null and tonumber(rec.x) <= tonumber(now) then
  return false
end
redis.call('HDEL', retained, topic)
if redis.call('HLEN', retained) == 0 and redis.call('HLEN', presence) == 0 then
  redis.call('SREM', rooms, room)
end
local id = append(stream, bytes, maxlen, head, tail, ttl, maxbytes, trimmed)
redis.call('PUBLISH', channel, head .. id .. tail)
remember(once, fingerprint, id, ttl)
return id
"#
);

/// Adds a peer to presence and announces it.
pub(super) const JOIN: &str = r#"
local presence, order_key, rooms, instance_peers = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local peer, instance, peer_json, event, channel, room, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local order = redis.call('INCR', order_key)
redis.call('HSET', presence, peer, instance .. '\t' .. order .. '\t' .. peer_json)
redis.call('SADD', rooms, room)
redis.call('SADD', instance_peers, member)
redis.call('PUBLISH', channel, event)
return order
"#;

/// Removes a peer (only if it belongs to the expected instance, when given)
/// and announces it; returns 1 when this call removed it.
pub(super) const LEAVE: &str = r#"
local presence, retained, rooms = KEYS[1], KEYS[2], KEYS[3]
local peer, event, channel, expected_instance = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local peers_prefix, member, room = ARGV[5], ARGV[6], ARGV[7]
local cur = redis.call('HGET', presence, peer)
if not cur then return 0 end
if expected_instance ~= '' and string.sub(cur, 1, string.len(expected_instance) + 1) ~= (expected_instance .. '\t') then return 0 end
redis.call('HDEL', presence, peer)
if redis.call('HLEN', presence) == 0 and redis.call('HLEN', retained) == 0 then
  redis.call('SREM', rooms, room)
end
local instance = string.match(cur, '^([^\t]*)\t')
if instance then redis.call('SREM', peers_prefix .. instance .. ':peers', member) end
redis.call('PUBLISH', channel, event)
return 1
"#;

/// Replaces a peer's entry if it is unchanged since it was read, and announces the state.
pub(super) const SET_STATE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"#;

/// Removes and returns a will: exactly one caller gets it.
pub(super) const TAKE_WILL: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then redis.call('HDEL', KEYS[1], ARGV[1]) end
return cur
"#;

/// Keeps a delayed will (`w:<record>`) in the deadline set, due after its
/// delay on Redis's clock (one clock for every instance).
pub(super) const DEFER_WILL: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"#;

/// Puts back a live peer (and its will) that Redis lost, announcing it with
/// `join` so that subscribers who joined meanwhile see it again. A peer still
/// present is left alone.
pub(super) const REASSERT: &str = r#"
local presence, order_key, rooms, wills, instance_peers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local peer, instance, peer_json, event, channel, room, will, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
redis.call('SADD', instance_peers, member)
if redis.call('HEXISTS', presence, peer) == 0 then
  local order = redis.call('INCR', order_key)
  redis.call('HSET', presence, peer, instance .. '\t' .. order .. '\t' .. peer_json)
  redis.call('SADD', rooms, room)
  redis.call('PUBLISH', channel, event)
end
if will ~= '' then redis.call('HSETNX', wills, peer, will) end
return 1
"#;

/// Refreshes this instance's heartbeat key and its deadline (`i:<id>`, when it
/// counts as dead, on Redis's clock) in the deadline set; 1 when the key was
/// still there, 0 when it had lapsed (or Redis lost it).
pub(super) const BEAT: &str = r#"
local had = redis.call('SET', KEYS[1], 1, 'PX', ARGV[1], 'GET')
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]), ARGV[2])
if had then return 1 end
return 0
"#;
