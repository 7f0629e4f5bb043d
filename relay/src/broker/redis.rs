//! The Redis broker: many relay instances share rooms through one Redis.
//!
//! - Every event of a room is published by one Lua script that appends it to
//!   the room's stream (`XADD`, which assigns the `<ms>-<seq>` id) and
//!   `PUBLISH`es it, atomically: one id, one order, for every instance. The
//!   event is serialized once, in two halves around its id.
//! - Each instance holds one pub/sub connection and subscribes to a room's
//!   channel once, while it has local subscribers; local fan-out does the rest.
//!   A reconnected pub/sub connection resubscribes and replays from the stream
//!   what it missed, so live subscribers see no gap.
//! - Presence, retained values and wills are per-room hashes. Presence entries
//!   name their instance; instances keep a heartbeat key alive, and any
//!   instance's sweep removes the peers (and fires the wills) of an instance
//!   whose heartbeat lapsed.
//! - Keys are `<prefix>:{<room>}:<what>`: the room is a hash tag, so a Redis
//!   Cluster could shard them by room.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{AsyncCommands, Script, Value};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{
    BrokerError, DeferredWill, Draft, History, Limits, RetainDraft, Retained, RoomPage,
    RoomSnapshot, RoomSummary, WILL_LEASE, Will,
};
use crate::hub::Fanout;
use crate::idempotency::Once;
use crate::protocol::{
    Event, EventId, LeaveReason, Message, Payload, PeerInfo, RoomName, Status, now_ms,
    null_payload, payload_from_raw,
};
use crate::topic::{Topic, TopicFilter};

/// How the Redis broker connects and identifies itself.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL.
    pub url: String,
    /// Prefix of every key and channel.
    pub prefix: String,
    /// Longest wait for one Redis reply; also the connect timeout.
    pub timeout: Duration,
    /// How long an instance's heartbeat lives: a dead instance's peers are
    /// removed this long (plus one sweep) after its last beat.
    pub instance_ttl: Duration,
}

/// Shared state of the Redis broker.
pub struct RedisBroker {
    conn: ConnectionManager,
    settings: RedisSettings,
    limits: Limits,
    instance: Arc<str>,
    fanout: Arc<Fanout>,
    pubsub: Arc<tokio::sync::Mutex<PubSubState>>,
    /// Last history id delivered locally per watched room (deduplication after a resync).
    delivered: Arc<Mutex<HashMap<RoomName, EventId>>>,
    commands_ok: Arc<AtomicBool>,
    pubsub_ok: Arc<AtomicBool>,
    /// Redis's clock minus this relay's, in ms (measured with each heartbeat).
    clock_offset_ms: AtomicI64,
    /// This instance's own peers and their wills, as it last told Redis: what
    /// it re-asserts when Redis has lost them.
    local: Mutex<HashMap<(RoomName, Arc<str>), LocalPeer>>,
    /// Since when (ms) this instance has reached Redis without a break and
    /// with its heartbeat in place. Other instances are judged dead only
    /// after this has lasted an instance TTL: after an outage they need one
    /// heartbeat to show they are alive.
    connected_since: AtomicU64,
    /// True once the first heartbeat was written.
    beaten: AtomicBool,
    /// Set when Redis has lost this instance's state; cleared once re-asserted.
    reassert_due: AtomicBool,
    scripts: Scripts,
}

/// One of this instance's peers as Redis should hold it.
struct LocalPeer {
    info: PeerInfo,
    /// The stored will record, if the peer has a will.
    will: Option<String>,
}

#[derive(Default)]
struct PubSubState {
    sink: Option<PubSubSink>,
    subscribed: HashSet<RoomName>,
}

struct Scripts {
    append: Script,
    direct: Script,
    direct_message: Script,
    set_retained: Script,
    clear_retained: Script,
    join: Script,
    leave: Script,
    set_state: Script,
    take_will: Script,
    defer_will: Script,
    reassert: Script,
    beat: Script,
    claim_due: Script,
    rooms_page: Script,
    stream_marks: Script,
}

/// Lua shared by the keyed writes: `recall` answers a retry with the first
/// attempt's id (a key named `''` means the write carries none), or
/// `key_reused` when the key named a different write; `remember` keeps the
/// id and the write's fingerprint for the history TTL.
macro_rules! once_fn {
    () => {
        r#"
local function recall(k, fp)
  if k == '' then return nil end
  local v = redis.call('GET', k)
  if not v then return nil end
  local sp = string.find(v, ' ', 1, true)
  if not sp or string.sub(v, sp + 1) ~= fp then return {err = 'key_reused'} end
  return string.sub(v, 1, sp - 1)
end
local function remember(k, fp, id, ttl)
  if k ~= '' then redis.call('SET', k, id .. ' ' .. fp, 'PX', ttl) end
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
const APPEND: &str = concat!(
    append_fn!(),
    r#"
local done = recall(KEYS[4], ARGV[9])
if done then return done end
if late(ARGV[8]) then return {err = 'late'} end
local id = append(KEYS[1], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7], KEYS[2])
redis.call('PUBLISH', ARGV[5], ARGV[2] .. id .. ARGV[3])
remember(KEYS[4], ARGV[9], id, ARGV[4])
return id
"#
);

/// A stream's last id, first entry id and newest trimmed id (the gap
/// marker), `''` for each it lacks; nil when the stream does not exist.
const STREAM_MARKS: &str = r#"
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
const ROOMS_PAGE: &str = r#"
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
/// it. Dead instances (`i:`) only when ARGV[4] is 1: an instance just back
/// from a break leaves them to others (or to itself a TTL later).
const CLAIM_DUE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local claimed = {}
for _, m in ipairs(due) do
  if ARGV[4] == '1' or string.sub(m, 1, 2) ~= 'i:' then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[3]), m)
    claimed[#claimed + 1] = m
  end
end
return claimed
"#;

/// Publishes a direct message if its recipient is present, with an id taken
/// from the room's own sequence: the stream's last id is moved on (XSETID, or
/// an empty stream made with that id) without an entry, so the id is unique
/// in the room and ordered with its broadcasts, whatever the relays' clocks.
/// The event's JSON arrives in two halves around its id.
const DIRECT_MESSAGE: &str = concat!(
    once_fn!(),
    r#"
local done = recall(KEYS[3], ARGV[6])
if done then return done end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms, seq = now, 0
local exists = redis.call('EXISTS', KEYS[2]) == 1
if exists then
  local info = redis.call('XINFO', 'STREAM', KEYS[2])
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
  redis.call('XSETID', KEYS[2], id)
else
  redis.call('XADD', KEYS[2], 'MAXLEN', '0', id, 'p', '', 's', '')
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[2], ARGV[3] .. id .. ARGV[4])
remember(KEYS[3], ARGV[6], id, ARGV[5])
return id
"#
);

/// Publishes an internal event for one present peer (a token refresh).
const DIRECT: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
"#;

/// Stores a retained value (within the topic limit), appends and publishes its
/// status event. The stored record holds the event id, for compare-and-clear.
const SET_RETAINED: &str = concat!(
    append_fn!(),
    r#"
local done = recall(KEYS[5], ARGV[13])
if done then return done end
if late(ARGV[12]) then return {err = 'late'} end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[2]) then
  return {err = 'too_many_topics'}
end
local id = append(KEYS[2], KEYS[4], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[11], KEYS[6])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[8] .. id .. ARGV[9])
redis.call('SADD', KEYS[3], ARGV[10])
if ARGV[14] ~= '' then
  redis.call('ZADD', KEYS[7], tonumber(ARGV[14]), 'x:' .. cjson.encode({ARGV[10], ARGV[1], id, ARGV[15]}))
end
redis.call('PUBLISH', ARGV[7], ARGV[4] .. id .. ARGV[5])
remember(KEYS[5], ARGV[13], id, ARGV[6])
return id
"#
);

/// Clears a retained value that has not lapsed (or, with an expected id, exactly
/// that value), appending and publishing a status event with data null.
const CLEAR_RETAINED: &str = concat!(
    append_fn!(),
    r#"
local done = recall(KEYS[4], ARGV[11])
if done then return done end
if late(ARGV[10]) then return {err = 'late'} end
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return false end
local rec = cjson.decode(cur)
if ARGV[2] ~= '' then
  if rec.id ~= ARGV[2] then return false end
elseif rec.x ~= nil and rec.x ~= cjson.null and tonumber(rec.x) <= tonumber(ARGV[8]) then
  return false
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 and redis.call('HLEN', KEYS[6]) == 0 then
  redis.call('SREM', KEYS[7], ARGV[12])
end
local id = append(KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[9], KEYS[5])
redis.call('PUBLISH', ARGV[7], ARGV[4] .. id .. ARGV[5])
remember(KEYS[4], ARGV[11], id, ARGV[6])
return id
"#
);

/// Adds a peer to presence and announces it.
const JOIN: &str = r#"
local order = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\t' .. order .. '\t' .. ARGV[3])
redis.call('SADD', KEYS[3], ARGV[6])
redis.call('SADD', KEYS[4], ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return order
"#;

/// Removes a peer (only if it belongs to the expected instance, when given)
/// and announces it; returns 1 when this call removed it.
const LEAVE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
if ARGV[4] ~= '' and string.sub(cur, 1, string.len(ARGV[4]) + 1) ~= (ARGV[4] .. '\t') then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 and redis.call('HLEN', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[7])
end
local instance = string.match(cur, '^([^\t]*)\t')
if instance then redis.call('SREM', ARGV[5] .. instance .. ':peers', ARGV[6]) end
redis.call('PUBLISH', ARGV[3], ARGV[2])
return 1
"#;

/// Replaces a peer's entry if it is unchanged since it was read, and announces the state.
const SET_STATE: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[4])
return 1
"#;

/// Removes and returns a will: exactly one caller gets it.
const TAKE_WILL: &str = r#"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then redis.call('HDEL', KEYS[1], ARGV[1]) end
return cur
"#;

/// Keeps a delayed will (`w:<record>`) in the deadline set, due after its
/// delay on Redis's clock (one clock for every instance).
const DEFER_WILL: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
"#;

/// Puts back a live peer (and its will) that Redis lost, announcing it with
/// `join` so that subscribers who joined meanwhile see it again. A peer still
/// present is left alone.
const REASSERT: &str = r#"
redis.call('SADD', KEYS[5], ARGV[8])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local order = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\t' .. order .. '\t' .. ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[6])
  redis.call('PUBLISH', ARGV[5], ARGV[4])
end
if ARGV[7] ~= '' then redis.call('HSETNX', KEYS[4], ARGV[1], ARGV[7]) end
return 1
"#;

/// Refreshes this instance's heartbeat key and its deadline (`i:<id>`, when it
/// counts as dead, on Redis's clock) in the deadline set; 1 when the key was
/// still there, 0 when it had lapsed (or Redis lost it).
const BEAT: &str = r#"
local had = redis.call('SET', KEYS[1], 1, 'PX', ARGV[1], 'GET')
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1]), ARGV[2])
if had then return 1 end
return 0
"#;

/// Stored form of a pending (deferred) will: the will with its room, peer and
/// user, and a random id that names it for its once-only firing.
#[derive(Serialize, Deserialize)]
struct DeferredRecord<'a> {
    id: &'a str,
    room: &'a str,
    peer: &'a str,
    user: &'a str,
    topic: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    after: Option<f64>,
}

/// A peer as a member of its instance's set: `[room, peer]` as JSON.
fn peer_member(room: &RoomName, peer: &str) -> String {
    serde_json::to_string(&(room.as_str(), peer)).unwrap_or_default()
}

/// Stored form of a retained value.
#[derive(Serialize, Deserialize)]
struct RetainedRecord<'a> {
    id: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    ts: u64,
    from: &'a str,
    /// Expiry (ms since the epoch), if any.
    x: Option<u64>,
}

/// Stored form of a will.
#[derive(Serialize, Deserialize)]
struct WillRecord<'a> {
    topic: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
    after: Option<f64>,
}

/// Stored form of a presence entry's peer.
#[derive(Deserialize)]
struct PeerRecord {
    id: String,
    user: String,
    meta: Box<RawValue>,
    state: Box<RawValue>,
}

/// Redis could not be used at start-up: which URL (password hidden) and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach Redis at {url} (EDGEWIRE_REDIS_URL): {cause}")]
pub struct StartError {
    /// The configured URL with its password replaced.
    pub url: String,
    /// What went wrong, with what to check.
    pub cause: StartCause,
}

/// The cause of a [`StartError`], each with the thing an operator should check.
#[derive(Debug, thiserror::Error)]
pub enum StartCause {
    /// Nothing listens at the host and port.
    #[error(
        "connection refused; check that redis-server is running and listens on that host and port"
    )]
    Refused,
    /// No answer in time.
    #[error(
        "no answer within {0:?} (EDGEWIRE_REDIS_TIMEOUT); check the host, the port, firewalls, \
         and whether the server expects TLS (rediss://)"
    )]
    Timeout(Duration),
    /// The server refused the credentials, or wants some.
    #[error("authentication failed ({0}); check the user and password in the URL")]
    Auth(String),
    /// The TLS handshake failed.
    #[error(
        "TLS failed ({0}); check that the server speaks TLS on that port and that its certificate is valid for the host"
    )]
    Tls(String),
    /// The URL itself is wrong.
    #[error(
        "the URL is not valid ({0}); expected redis://[user:password@]host:port[/db], or rediss:// for TLS"
    )]
    BadUrl(String),
    /// Anything else, such as a host name that does not resolve.
    #[error("{0}; check the host name and the network")]
    Other(String),
}

impl StartCause {
    /// Sorts a Redis client error into a cause; `url` is only used to keep its
    /// password out of the text, `timeout` to say how long was waited.
    fn of(e: &redis::RedisError, url: &str, timeout: Duration) -> StartCause {
        let mut text = e.to_string();
        if let Some(password) = crate::redact::password_of(url) {
            text = text.replace(password, "REDACTED");
        }
        let lower = text.to_ascii_lowercase();
        if e.is_connection_refusal() {
            StartCause::Refused
        } else if e.is_timeout() {
            StartCause::Timeout(timeout)
        } else if e.kind() == redis::ErrorKind::AuthenticationFailed
            || lower.contains("noauth")
            || lower.contains("wrongpass")
            || lower.contains("invalid password")
            || lower.contains("auth")
        {
            StartCause::Auth(text)
        } else if lower.contains("tls")
            || lower.contains("certificate")
            || lower.contains("handshake")
        {
            StartCause::Tls(text)
        } else if e.kind() == redis::ErrorKind::InvalidClientConfig {
            StartCause::BadUrl(text)
        } else {
            StartCause::Other(text)
        }
    }
}

/// A write that failed: with no answer in time, stored or not (the outcome is
/// unknown, though never applied after the relay answered); refused as `late`
/// or for any other reason, not stored.
fn write_failed(e: redis::RedisError) -> BrokerError {
    // Scripts answer `{err = '<code>'}`: matched by the error's code.
    if e.code() == Some("key_reused") {
        return BrokerError::KeyReused;
    }
    if e.is_timeout() {
        tracing::debug!(error = %e, "redis write outcome unknown");
        return BrokerError::OutcomeUnknown;
    }
    unavailable(e)
}

fn unavailable(e: redis::RedisError) -> BrokerError {
    tracing::debug!(error = %e, "redis call failed");
    BrokerError::Unavailable
}

/// Splits an event's JSON, built with the id `0-0`, around that id.
fn split_at_id(json: &str) -> Option<(String, String)> {
    const MARK: &str = "\"id\":\"0-0\"";
    let at = json.find(MARK)?;
    Some((json[..at + 6].to_owned(), json[at + 9..].to_owned()))
}

fn template_error() -> BrokerError {
    tracing::error!("event template without an id placeholder");
    BrokerError::Unavailable
}

impl RedisBroker {
    /// Connects (failing after the timeout), starts the heartbeat and the
    /// pub/sub task, and returns the broker. A failure says which URL (its
    /// password hidden), why, and what to check.
    pub async fn connect(
        settings: RedisSettings,
        limits: Limits,
        fanout: Arc<Fanout>,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Arc<RedisBroker>, StartError> {
        let shown_url = crate::redact::url_password(&settings.url);
        let (url, timeout) = (settings.url.clone(), settings.timeout);
        let failed = |cause: StartCause| StartError {
            url: shown_url.clone(),
            cause,
        };
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| failed(StartCause::of(&e, &url, timeout)))?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(settings.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let timed_out = || failed(StartCause::Timeout(timeout));
        let mut conn = tokio::time::timeout(
            settings.timeout * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| failed(StartCause::of(&e, &url, timeout)))?;
        // A server that wants a password accepts the connection and refuses
        // the first command: ask once, so that shows as an auth failure.
        tokio::time::timeout(
            settings.timeout,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| failed(StartCause::of(&e, &url, timeout)))?;
        let instance: Arc<str> = Arc::from(format!("i-{}", crate::hub::random_id(9)));
        let broker = Arc::new(RedisBroker {
            conn,
            settings,
            limits,
            instance,
            fanout,
            pubsub: Arc::new(tokio::sync::Mutex::new(PubSubState::default())),
            delivered: Arc::new(Mutex::new(HashMap::new())),
            commands_ok: Arc::new(AtomicBool::new(true)),
            pubsub_ok: Arc::new(AtomicBool::new(false)),
            clock_offset_ms: AtomicI64::new(0),
            local: Mutex::new(HashMap::new()),
            connected_since: AtomicU64::new(now_ms()),
            beaten: AtomicBool::new(false),
            reassert_due: AtomicBool::new(false),
            scripts: Scripts {
                append: Script::new(APPEND),
                direct: Script::new(DIRECT),
                direct_message: Script::new(DIRECT_MESSAGE),
                set_retained: Script::new(SET_RETAINED),
                clear_retained: Script::new(CLEAR_RETAINED),
                join: Script::new(JOIN),
                leave: Script::new(LEAVE),
                set_state: Script::new(SET_STATE),
                take_will: Script::new(TAKE_WILL),
                defer_will: Script::new(DEFER_WILL),
                reassert: Script::new(REASSERT),
                beat: Script::new(BEAT),
                claim_due: Script::new(CLAIM_DUE),
                rooms_page: Script::new(ROOMS_PAGE),
                stream_marks: Script::new(STREAM_MARKS),
            },
        });
        broker.beat().await.map_err(|_| timed_out())?;
        tasks.spawn(heartbeat(broker.clone(), shutdown.clone()));
        tasks.spawn(pubsub_loop(broker.clone(), client, shutdown));
        Ok(broker)
    }

    /// This instance's id, as written in presence entries.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// True while Redis answers and the pub/sub connection is up.
    pub fn is_ready(&self) -> bool {
        self.commands_ok.load(Ordering::Relaxed) && self.pubsub_ok.load(Ordering::Relaxed)
    }

    fn key(&self, room: &RoomName, what: &str) -> String {
        format!("{}:{{{}}}:{what}", self.settings.prefix, room)
    }

    /// The key and fingerprint a keyed write's script remembers it by; an
    /// empty key name for a write without one.
    fn once_args<'a>(&self, room: &RoomName, once: Option<&'a Once>) -> (String, &'a str) {
        match once {
            Some(once) => (
                self.key(room, &format!("once:{}", once.scope)),
                &once.fingerprint,
            ),
            None => (String::new(), ""),
        }
    }

    fn channel(&self, room: &RoomName) -> String {
        self.key(room, "events")
    }

    fn rooms_key(&self) -> String {
        format!("{}:rooms", self.settings.prefix)
    }

    /// The deadline set: everything the sweep must do at a time, scored by
    /// that time on Redis's clock. Members: `i:<instance>` (dead when due),
    /// `x:[room, topic, id, from]` (a retained value lapses), `w:<record>` (a
    /// delayed will). One set, so an idle sweep is one command. History needs
    /// no deadline: it is trimmed on write and aged out on read.
    fn due_key(&self) -> String {
        format!("{}:due", self.settings.prefix)
    }

    /// The set of an instance's own peers, as `[room, peer]` JSON members:
    /// what a survivor cleans up when the instance dies.
    fn peers_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}:peers", self.settings.prefix)
    }

    fn instance_key(&self, instance: &str) -> String {
        format!("{}:instance:{instance}", self.settings.prefix)
    }

    fn room_of_channel(&self, channel: &str) -> Option<RoomName> {
        let rest = channel
            .strip_prefix(&self.settings.prefix)?
            .strip_prefix(":{")?;
        let room = rest.strip_suffix("}:events")?;
        RoomName::parse(room).ok()
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn ttl_ms(&self) -> u64 {
        (self.limits.history_ttl.as_millis() as u64).max(1)
    }

    /// The latest moment, on Redis's clock, at which a write sent now may
    /// still be applied: the relay's own wait for the reply, less a tenth for
    /// the way back. A write that reaches Redis later (a paused server, a
    /// backlog) is refused by its script, so it is never applied after the
    /// relay has answered that it failed.
    fn write_deadline(&self) -> i64 {
        let wait = self.settings.timeout.as_millis() as i64;
        now_ms() as i64 + self.clock_offset_ms.load(Ordering::Relaxed) + wait - wait / 10
    }

    /// Measures Redis's clock against this relay's (`TIME`, midway through
    /// the round trip), for [`RedisBroker::write_deadline`].
    async fn measure_clock(&self) -> Result<(), BrokerError> {
        let sent = now_ms() as i64;
        let (secs, micros): (i64, i64) = redis::cmd("TIME")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let back = now_ms() as i64;
        let redis_ms = secs * 1000 + micros / 1000;
        self.clock_offset_ms
            .store(redis_ms - (sent + back) / 2, Ordering::Relaxed);
        Ok(())
    }

    async fn beat(&self) -> Result<(), BrokerError> {
        // The clock is measured with every heartbeat: skew drifts slowly.
        let _ = self.measure_clock().await;
        let ttl = (self.settings.instance_ttl.as_millis() as u64).max(1);
        let result: Result<i64, _> = self
            .scripts
            .beat
            .key(self.instance_key(&self.instance))
            .key(self.due_key())
            .arg(ttl)
            .arg(format!("i:{}", self.instance))
            .invoke_async(&mut self.conn())
            .await;
        let had_heartbeat = match result {
            Ok(previous) => previous,
            Err(e) => {
                self.commands_ok.store(false, Ordering::Relaxed);
                return Err(unavailable(e));
            }
        };
        if !self.commands_ok.swap(true, Ordering::Relaxed) {
            // Back after a break: other instances may not have beaten yet.
            self.connected_since.store(now_ms(), Ordering::Relaxed);
        }
        if had_heartbeat == 0 && self.beaten.swap(true, Ordering::Relaxed) {
            // Our heartbeat had lapsed: Redis lost its data, or we were cut
            // off for longer than the TTL (and may have been swept as dead).
            tracing::warn!("this instance's heartbeat had lapsed in Redis; re-asserting its peers");
            self.connected_since.store(now_ms(), Ordering::Relaxed);
            self.reassert_due.store(true, Ordering::Relaxed);
        }
        if self.reassert_due.load(Ordering::Relaxed) {
            let count = self.reassert().await?;
            self.reassert_due.store(false, Ordering::Relaxed);
            tracing::info!(peers = count, "re-asserted this instance's peers and wills");
        }
        Ok(())
    }

    /// True once this instance has reached Redis, heartbeat in place, for an
    /// instance TTL: any live instance has beaten since, so a missing
    /// heartbeat now means a dead instance.
    fn may_judge_others(&self) -> bool {
        let since = self.connected_since.load(Ordering::Relaxed);
        self.commands_ok.load(Ordering::Relaxed)
            && !self.reassert_due.load(Ordering::Relaxed)
            && now_ms().saturating_sub(since) >= self.settings.instance_ttl.as_millis() as u64
    }

    pub(super) async fn defer_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        user: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        let id = crate::hub::random_id(12);
        let record = serde_json::to_string(&DeferredRecord {
            id: &id,
            room: room.as_str(),
            peer,
            user,
            topic: will.topic.as_str(),
            data: &will.data,
            after: will.after.map(|d| d.as_secs_f64()),
        })
        .map_err(|_| template_error())?;
        let delay = will.after.map_or(0, |d| d.as_millis() as u64);
        let _: i64 = self
            .scripts
            .defer_will
            .key(self.due_key())
            .arg(format!("w:{record}"))
            .arg(delay)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// A claimed `w:` member as the will it holds (`None` when unreadable).
    fn deferred_will(member: &str) -> Option<DeferredWill> {
        let record = member.strip_prefix("w:")?;
        let r = serde_json::from_str::<DeferredRecord<'_>>(record).ok()?;
        Some(DeferredWill {
            room: RoomName::parse(r.room).ok()?,
            peer: Arc::from(r.peer),
            user: Arc::from(r.user),
            will: Will::new(r.topic, payload_from_raw(r.data), r.after).ok()?,
            id: r.id.to_owned(),
            handle: member.to_owned(),
        })
    }

    pub(super) async fn settle_will(&self, will: &DeferredWill) -> Result<(), BrokerError> {
        let _: i64 = self
            .conn()
            .zrem(self.due_key(), &will.handle)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    /// Appends an event (JSON built with id `0-0`) and publishes it; returns the event.
    async fn append(
        &self,
        room: &RoomName,
        template: &str,
        once: Option<&Once>,
    ) -> Result<Arc<Event>, BrokerError> {
        let (prefix, suffix) = split_at_id(template).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, once);
        let id: String = self
            .scripts
            .append
            .key(self.key(room, "stream"))
            .key(self.key(room, "trimmed"))
            .key(self.key(room, "history-bytes"))
            .key(once_key)
            .arg(self.limits.history_size)
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(self.channel(room))
            .arg(room.as_str())
            .arg(self.limits.history_bytes)
            .arg(self.write_deadline())
            .arg(fingerprint)
            .invoke_async(&mut self.conn())
            .await
            .map_err(write_failed)?;
        Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error)
    }

    pub(super) async fn publish(
        &self,
        room: &RoomName,
        draft: Draft,
    ) -> Result<Arc<Event>, BrokerError> {
        let message = Message {
            room: room.clone(),
            id: EventId::default(),
            ts: now_ms(),
            from: draft.from,
            kind: draft.kind,
            data: draft.data,
            to: draft.to,
            topic: draft.topic.map(|t| t.as_arc().clone()),
        };
        let event = Event::message(&message);
        let once = draft.once.as_ref();
        match &message.to {
            None => self.append(room, event.json(), once).await,
            Some(to) => self.direct_message(room, to, event.json(), once).await,
        }
    }

    /// Sends a direct message (JSON built with id `0-0`) to a present peer,
    /// with an id from the room's sequence; returns the event as sent.
    async fn direct_message(
        &self,
        room: &RoomName,
        to: &Arc<str>,
        template: &str,
        once: Option<&Once>,
    ) -> Result<Arc<Event>, BrokerError> {
        let (prefix, suffix) = split_at_id(template).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, once);
        let id: Option<String> = self
            .scripts
            .direct_message
            .key(self.key(room, "presence"))
            .key(self.key(room, "stream"))
            .key(once_key)
            .arg(&**to)
            .arg(self.channel(room))
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(fingerprint)
            .invoke_async(&mut self.conn())
            .await
            .map_err(write_failed)?;
        let id = id.ok_or_else(|| BrokerError::NoSuchPeer {
            room: room.to_string(),
            peer: to.to_string(),
        })?;
        Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error)
    }

    /// Publishes an event for one present peer only (a direct message, or an
    /// internal event such as a token refresh); it is not kept in history.
    pub(super) async fn control(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        event: Arc<Event>,
    ) -> Result<(), BrokerError> {
        let sent: i64 = self
            .scripts
            .direct
            .key(self.key(room, "presence"))
            .arg(&**peer)
            .arg(self.channel(room))
            .arg(event.json())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if sent == 0 {
            return Err(BrokerError::NoSuchPeer {
                room: room.to_string(),
                peer: peer.to_string(),
            });
        }
        Ok(())
    }

    fn status_template(
        room: &RoomName,
        topic: &Topic,
        data: Payload,
        from: Arc<str>,
        ts: u64,
    ) -> Arc<Event> {
        Event::status(&Status {
            room: room.clone(),
            id: Some(EventId::default()),
            topic: topic.as_arc().clone(),
            data,
            ts,
            from,
            retained: false,
        })
    }

    pub(super) async fn set_retained(
        &self,
        room: &RoomName,
        draft: RetainDraft,
    ) -> Result<Arc<Event>, BrokerError> {
        let ts = now_ms();
        let event = Self::status_template(
            room,
            &draft.topic,
            draft.data.clone(),
            draft.from.clone(),
            ts,
        );
        let (prefix, suffix) = split_at_id(event.json()).ok_or_else(template_error)?;
        let expires = draft.ttl.map(|t| ts.saturating_add(t.as_millis() as u64));
        let record = serde_json::to_string(&RetainedRecord {
            id: "0-0",
            data: &draft.data,
            ts,
            from: &draft.from,
            x: expires,
        })
        .map_err(|_| template_error())?;
        let (record_prefix, record_suffix) = split_at_id(&record).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, draft.once.as_ref());
        let result: Result<String, _> = self
            .scripts
            .set_retained
            .key(self.key(room, "retained"))
            .key(self.key(room, "stream"))
            .key(self.rooms_key())
            .key(self.key(room, "history-bytes"))
            .key(once_key)
            .key(self.key(room, "trimmed"))
            .key(self.due_key())
            .arg(draft.topic.as_str())
            .arg(self.limits.max_topics)
            .arg(self.limits.history_size)
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(self.channel(room))
            .arg(record_prefix)
            .arg(record_suffix)
            .arg(room.as_str())
            .arg(self.limits.history_bytes)
            .arg(self.write_deadline())
            .arg(fingerprint)
            .arg(
                expires
                    .map(|x| x as i64 + self.clock_offset_ms.load(Ordering::Relaxed))
                    .map(|at| at.to_string())
                    .unwrap_or_default(),
            )
            .arg(&*draft.from)
            .invoke_async(&mut self.conn())
            .await;
        match result {
            Ok(id) => Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error),
            Err(e) if e.code() == Some("too_many_topics") => Err(BrokerError::TooManyTopics {
                room: room.to_string(),
                limit: self.limits.max_topics,
            }),
            Err(e) => Err(write_failed(e)),
        }
    }

    /// Clears a topic; with `expected`, only the value of that id (a lapsed one).
    async fn clear(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        expected: Option<&str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        let event = Self::status_template(room, topic, null_payload(), from, now_ms());
        let (prefix, suffix) = split_at_id(event.json()).ok_or_else(template_error)?;
        let (once_key, fingerprint) = self.once_args(room, once);
        let id: Option<String> = self
            .scripts
            .clear_retained
            .key(self.key(room, "retained"))
            .key(self.key(room, "stream"))
            .key(self.key(room, "history-bytes"))
            .key(once_key)
            .key(self.key(room, "trimmed"))
            .key(self.key(room, "presence"))
            .key(self.rooms_key())
            .arg(topic.as_str())
            .arg(expected.unwrap_or(""))
            .arg(self.limits.history_size)
            .arg(&prefix)
            .arg(&suffix)
            .arg(self.ttl_ms())
            .arg(self.channel(room))
            .arg(now_ms())
            .arg(self.limits.history_bytes)
            .arg(self.write_deadline())
            .arg(fingerprint)
            .arg(room.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(write_failed)?;
        match id {
            Some(id) => Ok(Some(
                Event::from_json(format!("{prefix}{id}{suffix}")).ok_or_else(template_error)?,
            )),
            None => Ok(None),
        }
    }

    pub(super) async fn clear_retained(
        &self,
        room: &RoomName,
        topic: &Topic,
        from: Arc<str>,
        once: Option<&Once>,
    ) -> Result<Option<Arc<Event>>, BrokerError> {
        self.clear(room, topic, from, None, once).await
    }

    async fn retained_records(&self, room: &RoomName) -> Result<Vec<(Topic, String)>, BrokerError> {
        let all: HashMap<String, String> = self
            .conn()
            .hgetall(self.key(room, "retained"))
            .await
            .map_err(unavailable)?;
        Ok(all
            .into_iter()
            .filter_map(|(t, v)| Topic::parse(&t).ok().map(|t| (t, v)))
            .collect())
    }

    pub(super) async fn retained(
        &self,
        room: &RoomName,
        filter: Option<&TopicFilter>,
    ) -> Result<Vec<Retained>, BrokerError> {
        let now = now_ms();
        let mut out: Vec<Retained> = self
            .retained_records(room)
            .await?
            .into_iter()
            .filter(|(topic, _)| filter.is_none_or(|f| f.matches(topic.as_str())))
            .filter_map(|(topic, record)| {
                let rec: RetainedRecord<'_> = serde_json::from_str(&record).ok()?;
                if rec.x.is_some_and(|x| x <= now) {
                    return None;
                }
                let data = payload_from_raw(rec.data);
                let from: Arc<str> = Arc::from(rec.from);
                let replay = Event::status(&Status {
                    room: room.clone(),
                    id: None,
                    topic: topic.as_arc().clone(),
                    data: data.clone(),
                    ts: rec.ts,
                    from: from.clone(),
                    retained: true,
                });
                Some(Retained {
                    topic,
                    data,
                    ts: rec.ts,
                    from,
                    expires_at: rec.x,
                    replay,
                })
            })
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        Ok(out)
    }

    /// The stream's last id, first entry and newest dropped id (see
    /// `STREAM_MARKS`); `None` when the stream does not exist.
    async fn stream_info(&self, room: &RoomName) -> Result<Option<StreamInfo>, BrokerError> {
        let marks: Option<(String, String, String)> = self
            .scripts
            .stream_marks
            .key(self.key(room, "stream"))
            .key(self.key(room, "trimmed"))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let id = |v: &str| -> Option<EventId> {
            v.parse()
                .ok()
                .filter(|id: &EventId| *id != EventId::default())
        };
        Ok(marks.map(|(last, first, dropped)| StreamInfo {
            last: id(&last),
            first: id(&first),
            dropped: id(&dropped),
        }))
    }

    /// Events after `since` (or the latest ones), with whether nothing was
    /// lost between. Entries past the history's age are treated as trimmed
    /// here (the append that comes next drops them), so a quiet room's
    /// history ages without any timer.
    pub(super) async fn history(
        &self,
        room: &RoomName,
        since: Option<EventId>,
        limit: usize,
    ) -> Result<History, BrokerError> {
        let Some(info) = self.stream_info(room).await? else {
            return Ok(History {
                events: Vec::new(),
                complete: since.is_none(),
            });
        };
        let key = self.key(room, "stream");
        let count = limit.min(self.limits.history_size.max(1));
        // The oldest id still within the history's age, on Redis's clock.
        let redis_now = now_ms() as i64 + self.clock_offset_ms.load(Ordering::Relaxed);
        let fresh = EventId {
            ms: (redis_now - self.ttl_ms() as i64).max(0) as u64,
            seq: 0,
        };
        let mut dropped = info.dropped;
        let entries: Vec<(String, HashMap<String, String>)> = match since {
            Some(since) => {
                if since < fresh {
                    // Aged entries after the resume point count as dropped.
                    let aged: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                        .arg(&key)
                        .arg(format!("({fresh}"))
                        .arg(format!("({since}"))
                        .arg("COUNT")
                        .arg(1)
                        .query_async(&mut self.conn())
                        .await
                        .map_err(unavailable)?;
                    if let Some(newest) = aged.ids.first().and_then(|e| e.id.parse().ok()) {
                        dropped = dropped.max(Some(newest));
                    }
                }
                let start = if since < fresh {
                    fresh.to_string()
                } else {
                    format!("({since}")
                };
                let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                stream_entries(reply)
            }
            None => {
                let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg(fresh.to_string())
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                let mut entries = stream_entries(reply);
                entries.reverse();
                entries
            }
        };
        let events = entries
            .into_iter()
            .filter_map(|(id, fields)| {
                Event::from_json(format!("{}{id}{}", fields.get("p")?, fields.get("s")?))
            })
            .collect();
        let complete = match since {
            None => true,
            // Events after the resume point were dropped; or nothing was dropped
            // from this stream yet but the resume point predates it (the stream
            // expired while idle and was made anew).
            Some(since) => match (dropped, info.first) {
                (Some(dropped), _) => since >= dropped,
                (None, Some(first)) => since >= first,
                (None, None) => true,
            },
        };
        Ok(History { events, complete })
    }

    async fn presence(&self, room: &RoomName) -> Result<Vec<(String, u64, PeerInfo)>, BrokerError> {
        let all: HashMap<String, String> = self
            .conn()
            .hgetall(self.key(room, "presence"))
            .await
            .map_err(unavailable)?;
        let mut out: Vec<(String, u64, PeerInfo)> = all
            .into_values()
            .filter_map(|v| parse_presence(&v))
            .collect();
        out.sort_by_key(|(_, order, _)| *order);
        Ok(out)
    }

    pub(super) async fn join(
        &self,
        room: &RoomName,
        peer: PeerInfo,
    ) -> Result<RoomSnapshot, BrokerError> {
        let peer_json = serde_json::to_string(&peer).map_err(|_| template_error())?;
        let event = Event::join(room, &peer);
        let _: i64 = self
            .scripts
            .join
            .key(self.key(room, "presence"))
            .key(self.key(room, "order"))
            .key(self.rooms_key())
            .key(self.peers_key(&self.instance))
            .arg(&*peer.id)
            .arg(&*self.instance)
            .arg(peer_json)
            .arg(event.json())
            .arg(self.channel(room))
            .arg(room.as_str())
            .arg(peer_member(room, &peer.id))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // Known as this instance's own only once Redis holds it: a join
        // that failed is never re-asserted.
        self.local_peers().insert(
            (room.clone(), peer.id.clone()),
            LocalPeer {
                info: peer.clone(),
                will: None,
            },
        );
        let mut snapshot = self.snapshot(room).await?;
        snapshot.peers.retain(|p| p.id != peer.id);
        Ok(snapshot)
    }

    async fn leave_as(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
        instance: &str,
    ) -> Result<bool, BrokerError> {
        let event = Event::leave(room, peer, reason);
        let removed: i64 = self
            .scripts
            .leave
            .key(self.key(room, "presence"))
            .key(self.key(room, "retained"))
            .key(self.rooms_key())
            .arg(&**peer)
            .arg(event.json())
            .arg(self.channel(room))
            .arg(instance)
            .arg(format!("{}:instance:", self.settings.prefix))
            .arg(peer_member(room, peer))
            .arg(room.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(removed == 1)
    }

    pub(super) async fn leave(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        reason: LeaveReason,
    ) -> Result<(), BrokerError> {
        self.local_peers().remove(&(room.clone(), peer.clone()));
        self.leave_as(room, peer, reason, "").await.map(|_| ())
    }

    /// This instance's own peers, as it last told Redis.
    fn local_peers(&self) -> std::sync::MutexGuard<'_, HashMap<(RoomName, Arc<str>), LocalPeer>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts back every local peer (and will) that Redis no longer holds:
    /// after Redis lost its data, or this instance was unreachable for longer
    /// than the instance TTL and another took its peers for dead.
    async fn reassert(&self) -> Result<usize, BrokerError> {
        let peers: Vec<(RoomName, PeerInfo, Option<String>)> = self
            .local_peers()
            .iter()
            .map(|((room, _), p)| (room.clone(), p.info.clone(), p.will.clone()))
            .collect();
        for (room, info, will) in &peers {
            let peer_json = serde_json::to_string(info).map_err(|_| template_error())?;
            let _: i64 = self
                .scripts
                .reassert
                .key(self.key(room, "presence"))
                .key(self.key(room, "order"))
                .key(self.rooms_key())
                .key(self.key(room, "wills"))
                .key(self.peers_key(&self.instance))
                .arg(&*info.id)
                .arg(&*self.instance)
                .arg(peer_json)
                .arg(Event::join(room, info).json())
                .arg(self.channel(room))
                .arg(room.as_str())
                .arg(will.as_deref().unwrap_or(""))
                .arg(peer_member(room, &info.id))
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        Ok(peers.len())
    }

    pub(super) async fn set_state(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        state: Payload,
    ) -> Result<(), BrokerError> {
        let missing = || BrokerError::NoSuchPeer {
            room: room.to_string(),
            peer: peer.to_string(),
        };
        for _ in 0..3 {
            let current: Option<String> = self
                .conn()
                .hget(self.key(room, "presence"), &**peer)
                .await
                .map_err(unavailable)?;
            let current = current.ok_or_else(missing)?;
            let Some((instance, order, mut info)) = parse_presence(&current) else {
                return Err(missing());
            };
            info.state = state.clone();
            let peer_json = serde_json::to_string(&info).map_err(|_| template_error())?;
            let event = Event::state(room, peer, &state);
            let done: i64 = self
                .scripts
                .set_state
                .key(self.key(room, "presence"))
                .arg(&**peer)
                .arg(&current)
                .arg(format!("{instance}\t{order}\t{peer_json}"))
                .arg(event.json())
                .arg(self.channel(room))
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if done == 1 {
                if let Some(local) = self.local_peers().get_mut(&(room.clone(), peer.clone())) {
                    local.info.state = state;
                }
                return Ok(());
            }
        }
        Err(BrokerError::Unavailable)
    }

    pub(super) async fn snapshot(&self, room: &RoomName) -> Result<RoomSnapshot, BrokerError> {
        let peers = self
            .presence(room)
            .await?
            .into_iter()
            .map(|(_, _, p)| p)
            .collect();
        let last_id = self.stream_info(room).await?.and_then(|info| info.last);
        Ok(RoomSnapshot { peers, last_id })
    }

    pub(super) async fn peer(
        &self,
        room: &RoomName,
        peer: &str,
    ) -> Result<Option<PeerInfo>, BrokerError> {
        let value: Option<String> = self
            .conn()
            .hget(self.key(room, "presence"), peer)
            .await
            .map_err(unavailable)?;
        Ok(value.as_deref().and_then(parse_presence).map(|(_, _, p)| p))
    }

    pub(super) async fn rooms(
        &self,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<RoomPage, BrokerError> {
        let cursor: u64 = match cursor {
            None => 0,
            Some(c) => c.parse().map_err(|_| BrokerError::BadCursor)?,
        };
        let reply: Vec<Value> = self
            .scripts
            .rooms_page
            .key(self.rooms_key())
            .arg(cursor)
            .arg(limit.max(1))
            .arg(format!("{}:{{", self.settings.prefix))
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut items = reply.into_iter();
        let next: String = items
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .unwrap_or_else(|| "0".into());
        let mut rooms = Vec::new();
        while let (Some(room), Some(peers), Some(topics)) =
            (items.next(), items.next(), items.next())
        {
            let room: Option<String> = redis::from_redis_value(room).ok();
            let peers: usize = redis::from_redis_value(peers).unwrap_or(0);
            let topics: usize = redis::from_redis_value(topics).unwrap_or(0);
            if let Some(room) = room.and_then(|r| RoomName::parse(&r).ok()) {
                rooms.push(RoomSummary {
                    room,
                    peers,
                    topics,
                });
            }
        }
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
        Ok(RoomPage {
            rooms,
            next: (next != "0").then_some(next),
        })
    }

    pub(super) async fn put_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
        will: Will,
    ) -> Result<(), BrokerError> {
        let record = serde_json::to_string(&WillRecord {
            topic: will.topic.as_str(),
            data: &will.data,
            after: will.after.map(|d| d.as_secs_f64()),
        })
        .map_err(|_| template_error())?;
        let _: () = self
            .conn()
            .hset(self.key(room, "wills"), &**peer, &record)
            .await
            .map_err(unavailable)?;
        if let Some(local) = self.local_peers().get_mut(&(room.clone(), peer.clone())) {
            local.will = Some(record);
        }
        Ok(())
    }

    pub(super) async fn take_will(
        &self,
        room: &RoomName,
        peer: &Arc<str>,
    ) -> Result<Option<Will>, BrokerError> {
        if let Some(local) = self.local_peers().get_mut(&(room.clone(), peer.clone())) {
            local.will = None;
        }
        let record: Option<String> = self
            .scripts
            .take_will
            .key(self.key(room, "wills"))
            .arg(&**peer)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(record.as_deref().and_then(|r| {
            let rec: WillRecord<'_> = serde_json::from_str(r).ok()?;
            Will::new(rec.topic, payload_from_raw(rec.data), rec.after).ok()
        }))
    }

    /// Subscribes this instance to the room's channel, waiting for Redis to confirm.
    pub(super) async fn watch(&self, room: &RoomName) -> Result<(), BrokerError> {
        let mut state = self.pubsub.lock().await;
        if state.subscribed.contains(room) {
            return Ok(());
        }
        let mut sink = state.sink.clone().ok_or(BrokerError::Unavailable)?;
        tokio::time::timeout(self.settings.timeout, sink.subscribe(self.channel(room)))
            .await
            .map_err(|_| BrokerError::Unavailable)?
            .map_err(unavailable)?;
        // Where this instance's delivery of the room starts: after a pub/sub
        // reconnect, the catch-up reads the stream from here (or from the
        // last event delivered), so a room that had delivered nothing yet is
        // caught up too. Subscribed first, so nothing falls between.
        let start = self
            .stream_info(room)
            .await?
            .and_then(|info| info.last)
            .unwrap_or_default();
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(room.clone())
            .or_insert(start);
        state.subscribed.insert(room.clone());
        Ok(())
    }

    /// Unsubscribes from a room that no longer has local subscribers.
    pub(super) async fn unwatch(&self, room: &RoomName) -> Result<(), BrokerError> {
        let mut state = self.pubsub.lock().await;
        if self.fanout.is_watched(room) || !state.subscribed.remove(room) {
            return Ok(());
        }
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room);
        if let Some(mut sink) = state.sink.clone() {
            let _ =
                tokio::time::timeout(self.settings.timeout, sink.unsubscribe(self.channel(room)))
                    .await;
        }
        Ok(())
    }

    /// Removes a dead instance's peers from their rooms with `leave` (reason
    /// `timeout`): an immediate will fires first, a delayed one is deferred.
    /// The peers come from the instance's own set, so the cost is its peers,
    /// not the rooms that exist. Every step is conditional, so a second
    /// sweeper after a lost claim repeats nothing.
    async fn clean_dead_instance(&self, instance: &str) -> Result<(), BrokerError> {
        if instance == &*self.instance {
            return Ok(());
        }
        let members: Vec<String> = self
            .conn()
            .smembers(self.peers_key(instance))
            .await
            .map_err(unavailable)?;
        for member in members {
            let Ok((room, peer)) = serde_json::from_str::<(String, String)>(&member) else {
                continue;
            };
            let Ok(room) = RoomName::parse(&room) else {
                continue;
            };
            let peer: Arc<str> = Arc::from(peer);
            let user = self.peer(&room, &peer).await?.map(|p| p.user);
            // As for a local close: an immediate will goes out before the
            // leave; a delayed one waits in Redis. Taking the will is
            // atomic, so only one sweeping instance handles it.
            if let Some(will) = self.take_will(&room, &peer).await? {
                if will.after.is_none() {
                    let draft = will.into_draft(peer.clone());
                    if let Err(e) = self.set_retained(&room, draft).await {
                        tracing::warn!(%room, error = %e, "will of a dead instance's peer not fired");
                    }
                } else if let Some(user) = &user {
                    self.defer_will(&room, &peer, user, will).await?;
                }
            }
            self.leave_as(&room, &peer, LeaveReason::Timeout, instance)
                .await?;
        }
        let _: () = redis::pipe()
            .del(self.peers_key(instance))
            .zrem(self.due_key(), format!("i:{instance}"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        tracing::info!(%instance, "cleaned up after a dead instance");
        Ok(())
    }

    /// The time-driven work, from deadline sets only, so that its cost
    /// follows what is due, not what exists: dead instances (their peers
    /// leave, their wills fire or wait), lapsed retained values (cleared and
    /// announced), delayed wills. One command a second when nothing is due. Every
    /// instance sweeps; claims and conditional scripts make each step happen
    /// once. Rooms leave the index when a leave or a clear empties them.
    pub(super) async fn sweep(&self, now: u64) -> Result<Vec<DeferredWill>, BrokerError> {
        // `now` on Redis's clock, where the deadlines are.
        let at = (now as i64 + self.clock_offset_ms.load(Ordering::Relaxed)).max(0) as u64;
        let judge = self.may_judge_others();
        let mut wills = Vec::new();
        for member in self.claim_due(&self.due_key(), at, judge).await? {
            let Some((kind, rest)) = member.split_once(':') else {
                continue;
            };
            match kind {
                // An instance whose heartbeat stopped (claimed only when this
                // instance may judge: not right after a break of its own).
                "i" => self.clean_dead_instance(rest).await?,
                // A retained value whose lifetime ended: cleared, announced as null.
                "x" => {
                    if let Ok((room, topic, id, from)) =
                        serde_json::from_str::<(String, String, String, String)>(rest)
                        && let (Ok(room), Ok(topic)) =
                            (RoomName::parse(&room), Topic::parse(&topic))
                    {
                        self.clear(&room, &topic, Arc::from(from), Some(&id), None)
                            .await?;
                    }
                    let _: i64 = self
                        .conn()
                        .zrem(self.due_key(), &member)
                        .await
                        .map_err(unavailable)?;
                }
                // A delayed will: for the hub to fire (or drop), then settle.
                "w" => match Self::deferred_will(&member) {
                    Some(will) => wills.push(will),
                    None => {
                        tracing::warn!("dropping an unreadable pending will");
                        let _: i64 = self
                            .conn()
                            .zrem(self.due_key(), &member)
                            .await
                            .map_err(unavailable)?;
                    }
                },
                _ => {}
            }
        }
        Ok(wills)
    }

    /// Claims up to 100 members of a deadline set due by `at` (see
    /// `CLAIM_DUE`): one command when none is due.
    async fn claim_due(
        &self,
        key: &str,
        at: u64,
        instances: bool,
    ) -> Result<Vec<String>, BrokerError> {
        self.scripts
            .claim_due
            .key(key)
            .arg(at)
            .arg(100)
            .arg(WILL_LEASE.as_millis() as u64)
            .arg(if instances { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Hands an event that arrived on the room's channel to local subscribers,
    /// once: history events at or before the last delivered id are skipped.
    fn deliver(&self, room: &RoomName, event: Arc<Event>) {
        if event.in_history()
            && let Some(id) = event.id()
        {
            let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            match delivered.get(room) {
                Some(last) if id <= *last => return,
                _ => {
                    delivered.insert(room.clone(), id);
                }
            }
        }
        self.fanout.deliver(room, event);
    }

    /// After a pub/sub reconnect: delivers what each watched room published
    /// while the connection was down, from its stream. False when a room's
    /// stream could not be read (the command connection may not be back yet):
    /// the caller then reconnects and tries again, rather than go silent.
    async fn resync(&self) -> bool {
        let rooms: Vec<(RoomName, EventId)> = self
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(r, id)| (r.clone(), *id))
            .collect();
        for (room, last) in rooms {
            // A room that was empty when first watched has no id to resume
            // after: everything its stream holds is new to this instance, and
            // only a stream cut to its size bound can have lost some.
            let fetched = if last == EventId::default() {
                self.history(&room, None, usize::MAX).await.map(|mut h| {
                    h.complete = h.events.len() < self.limits.history_size;
                    h
                })
            } else {
                self.history(&room, Some(last), usize::MAX).await
            };
            match fetched {
                Ok(history) => {
                    if !history.complete {
                        // Redis no longer holds all that was missed (a restart
                        // without persistence, or more than history keeps): say
                        // so rather than go silent.
                        tracing::warn!(%room, "events were lost while pub/sub was down; announcing reset");
                        self.fanout
                            .deliver(&room, Event::reset(&room, "events_lost"));
                    }
                    for event in history.events {
                        self.deliver(&room, event);
                    }
                }
                Err(e) => {
                    tracing::warn!(%room, error = %e, "resync after reconnect failed; retrying");
                    return false;
                }
            }
        }
        true
    }
}

/// What `XINFO STREAM` says about a room's history.
struct StreamInfo {
    last: Option<EventId>,
    dropped: Option<EventId>,
    first: Option<EventId>,
}

fn stream_entries(
    reply: redis::streams::StreamRangeReply,
) -> Vec<(String, HashMap<String, String>)> {
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let fields = entry
                .map
                .into_iter()
                .filter_map(|(k, v)| {
                    redis::FromRedisValue::from_redis_value(v)
                        .ok()
                        .map(|v: String| (k, v))
                })
                .collect();
            (entry.id, fields)
        })
        .collect()
}

/// Parses `<instance>\t<order>\t<peer json>`.
fn parse_presence(value: &str) -> Option<(String, u64, PeerInfo)> {
    let mut parts = value.splitn(3, '\t');
    let instance = parts.next()?.to_owned();
    let order = parts.next()?.parse().ok()?;
    let record: PeerRecord = serde_json::from_str(parts.next()?).ok()?;
    Some((
        instance,
        order,
        PeerInfo {
            id: Arc::from(record.id),
            user: Arc::from(record.user),
            meta: payload_from_raw(&record.meta),
            state: payload_from_raw(&record.state),
        },
    ))
}

/// Keeps this instance's heartbeat key alive (and notes whether Redis answers).
async fn heartbeat(broker: Arc<RedisBroker>, shutdown: CancellationToken) {
    let every = (broker.settings.instance_ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drained = drained(&broker, &shutdown);
    tokio::pin!(drained);
    loop {
        tokio::select! {
            () = &mut drained => {
                // The last session has closed (each sent its own leave): only
                // now may the heartbeat go. Deleted earlier, other instances
                // took the draining sessions for dead and fired their wills.
                let _: Result<(), _> = redis::pipe()
                    .del(broker.instance_key(&broker.instance))
                    .del(broker.peers_key(&broker.instance))
                    .zrem(broker.due_key(), &*broker.instance)
                    .query_async(&mut broker.conn())
                    .await;
                return;
            }
            _ = tick.tick() => {
                if let Err(e) = broker.beat().await {
                    tracing::warn!(error = %e, "redis heartbeat failed");
                }
            }
        }
    }
}

/// Resolves once shutdown has begun and this instance's last session has
/// closed: the heartbeat and the pub/sub connection serve draining sessions
/// until then. Checks every 50 ms, during the drain only.
async fn drained(broker: &RedisBroker, shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    let mut check = tokio::time::interval(Duration::from_millis(50));
    while broker.fanout.peer_count() > 0 {
        check.tick().await;
    }
}

/// Full-jitter backoff: a random wait up to `min(cap, base * 2^attempt)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap);
    let mut bytes = [0u8; 8];
    let random = if getrandom::fill(&mut bytes).is_ok() {
        u64::from_le_bytes(bytes)
    } else {
        now_ms()
    };
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(if millis == 0 {
        0
    } else {
        random % (millis + 1)
    })
}

/// Owns the pub/sub connection: (re)connects with backoff, resubscribes every
/// watched room, replays what was missed, delivers messages, and probes the
/// connection with PING so a silent one is replaced.
async fn pubsub_loop(broker: Arc<RedisBroker>, client: redis::Client, shutdown: CancellationToken) {
    let probe_every = Duration::from_secs(5).min(broker.settings.timeout * 2);
    let mut attempt = 0u32;
    // Draining sessions keep receiving live events until their own close.
    let drained = drained(&broker, &shutdown);
    tokio::pin!(drained);
    loop {
        if shutdown.is_cancelled() && broker.fanout.peer_count() == 0 {
            return;
        }
        let connected =
            tokio::time::timeout(broker.settings.timeout, client.get_async_pubsub()).await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            _ => {
                broker.pubsub_ok.store(false, Ordering::Relaxed);
                let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    () = &mut drained => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let resubscribed = {
            let mut state = broker.pubsub.lock().await;
            let mut wanted: HashSet<RoomName> = broker.fanout.watched_rooms().into_iter().collect();
            wanted.retain(|r| state.subscribed.contains(r));
            let mut ok = true;
            for room in &wanted {
                let done = tokio::time::timeout(
                    broker.settings.timeout,
                    sink.subscribe(broker.channel(room)),
                )
                .await;
                if !matches!(done, Ok(Ok(()))) {
                    ok = false;
                    break;
                }
            }
            if ok {
                state.subscribed = wanted;
                state.sink = Some(sink.clone());
            }
            ok
        };
        if !resubscribed {
            continue;
        }
        if !broker.resync().await {
            broker.pubsub.lock().await.sink = None;
            let wait = backoff(attempt, Duration::from_millis(100), Duration::from_secs(5));
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = &mut drained => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        }
        broker.pubsub_ok.store(true, Ordering::Relaxed);
        if attempt > 0 {
            tracing::info!("redis pub/sub reconnected");
        }
        attempt = 0;
        let mut probe = tokio::time::interval(probe_every);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        probe.tick().await;
        loop {
            tokio::select! {
                () = &mut drained => return,
                message = stream.next() => {
                    let Some(message) = message else { break };
                    let Some(room) = broker.room_of_channel(message.get_channel_name()) else { continue };
                    let Ok(payload) = message.get_payload::<String>() else { continue };
                    match Event::from_json(payload) {
                        Some(event) => broker.deliver(&room, event),
                        None => tracing::warn!(%room, "unreadable event on the room channel"),
                    }
                }
                _ = probe.tick() => {
                    // Any reply will do: on RESP2 a subscribed connection answers
                    // PING with an array ["pong", ""], on RESP3 with "PONG".
                    let pong: Result<Result<Value, _>, _> = tokio::time::timeout(broker.settings.timeout, sink.ping()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        tracing::warn!("redis pub/sub connection went silent; replacing it");
                        break;
                    }
                }
            }
        }
        broker.pubsub_ok.store(false, Ordering::Relaxed);
        broker.pubsub.lock().await.sink = None;
        tracing::warn!("redis pub/sub connection lost; reconnecting");
    }
}
