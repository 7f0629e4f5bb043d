//! The command connection: one multiplexed connection to a single Redis, or
//! a cluster connection that routes each command to the shard holding its
//! key's slot (following `MOVED`/`ASK` and failovers).

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

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
