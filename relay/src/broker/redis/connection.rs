//! The command connection: one multiplexed connection to a single Redis, or
//! a cluster connection that routes each command to the shard holding its
//! key's slot (following `MOVED`/`ASK` and failovers).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use super::errors::StartCause;
use super::sharded::BoundedPush;

/// Where the broker connects, read from `EDGEWIRE_REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// `redis://…` or `rediss://…`: one server.
    Single(String),
    /// `redis+cluster://[user:pass@]host:port[,host:port…]` (or
    /// `rediss+cluster://`): a Redis Cluster, found from any of these nodes.
    Cluster(Vec<String>),
}

impl Target {
    /// Reads a URL; a cluster URL becomes one plain URL per seed node.
    pub(super) fn parse(url: &str) -> Target {
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis+cluster://") {
            ("redis", rest)
        } else if let Some(rest) = url.strip_prefix("rediss+cluster://") {
            ("rediss", rest)
        } else {
            return Target::Single(url.to_owned());
        };
        // `user:pass@` applies to every node; the path and query too.
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let split = hosts.find(['/', '?']).unwrap_or(hosts.len());
        let (hosts, tail) = hosts.split_at(split);
        Target::Cluster(
            hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("{scheme}://{auth}{h}{tail}"))
                .collect(),
        )
    }
}

/// A command connection to either kind of Redis; cheap to clone (both kinds
/// multiplex one connection per server).
#[derive(Clone)]
pub(super) enum Conn {
    /// One server, reconnected by the manager.
    Single(ConnectionManager),
    /// A cluster, one connection per shard.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// What carries this instance's subscriptions.
pub(super) enum Subscriber {
    /// A client for the pub/sub connection to one server.
    Single(Box<redis::Client>),
    /// The sharded-subscription connection to a cluster, its pushes, and
    /// the flag its bounded queue raises when it overflowed.
    Cluster(
        ClusterConnection,
        tokio::sync::mpsc::Receiver<redis::PushInfo>,
        Arc<AtomicBool>,
    ),
}

/// TCP options of every connection to Redis: no Nagle delay. Commands of
/// many sessions share one multiplexed connection; with Nagle on, a command
/// sent while an earlier one is unacknowledged waits for that reply, which
/// halves concurrency to a distant Redis (measured: 2 round trips per
/// publish at 25 ms RTT instead of 1).
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// Opens the command connection and what will carry subscriptions, and
/// checks the server answers (a server that wants a password accepts the
/// connection and refuses the first command). Every step waits at most
/// twice `timeout`; a failure says why, `url` (the configured one) only
/// serving to hide its password in the cause.
pub(super) async fn open(
    target: &Target,
    url: &str,
    timeout: Duration,
) -> Result<(Conn, Subscriber), StartCause> {
    let cause = |e: redis::RedisError| StartCause::of(&e, url, timeout);
    let (mut conn, subscriber) = match target {
        Target::Single(single) => {
            let info = redis::IntoConnectionInfo::into_connection_info(single.as_str())
                .map_err(cause)?
                .set_tcp_settings(tcp_settings());
            let client = redis::Client::open(info).map_err(cause)?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(Some(timeout))
                .set_connection_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2));
            let conn = bounded(
                tokio::time::timeout(
                    timeout * 2,
                    client.get_connection_manager_with_config(config),
                )
                .await,
                url,
                timeout,
            )?;
            (Conn::Single(conn), Subscriber::Single(Box::new(client)))
        }
        Target::Cluster(nodes) => {
            let builder = || {
                ClusterClientBuilder::new(nodes.clone())
                    .tcp_settings(tcp_settings())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
            };
            let client = builder().build().map_err(cause)?;
            let conn = bounded(
                tokio::time::timeout(timeout * 2, client.get_async_connection()).await,
                url,
                timeout,
            )?;
            // Subscriptions on their own connections, RESP3 for pushes.
            let overflowed = Arc::new(AtomicBool::new(false));
            let (sender, pushes) = BoundedPush::new(overflowed.clone());
            let sub_client = builder()
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(sender)
                .build()
                .map_err(cause)?;
            let sub_conn = bounded(
                tokio::time::timeout(timeout * 2, sub_client.get_async_connection()).await,
                url,
                timeout,
            )?;
            (
                Conn::Cluster(conn),
                Subscriber::Cluster(sub_conn, pushes, overflowed),
            )
        }
    };
    bounded(
        tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn)).await,
        url,
        timeout,
    )?;
    Ok((conn, subscriber))
}

/// A start-up step's outcome, waited for with `tokio::time::timeout`: its
/// value, or why it failed (no answer within `timeout` included).
fn bounded<T>(
    outcome: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    url: &str,
    timeout: Duration,
) -> Result<T, StartCause> {
    match outcome {
        Ok(result) => result.map_err(|e| StartCause::of(&e, url, timeout)),
        Err(_) => Err(StartCause::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn a_cluster_url_names_every_seed_node_with_its_credentials() {
        assert_eq!(
            Target::parse("redis+cluster://u:p@10.0.0.1:7000,10.0.0.2:7001/?protocol=resp3"),
            Target::Cluster(vec![
                "redis://u:p@10.0.0.1:7000/?protocol=resp3".to_owned(),
                "redis://u:p@10.0.0.2:7001/?protocol=resp3".to_owned(),
            ])
        );
        assert_eq!(
            Target::parse("rediss+cluster://h:6380"),
            Target::Cluster(vec!["rediss://h:6380".to_owned()])
        );
        assert_eq!(
            Target::parse("redis://localhost:6379"),
            Target::Single("redis://localhost:6379".to_owned())
        );
    }
}
