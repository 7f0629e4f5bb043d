//! A real Redis Cluster on loopback: `redis-server --cluster-enabled yes`
//! per node, joined by `redis-cli --cluster create`, each node with no
//! persistence; every process is killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::DEADLINE;

/// How long a silent node takes to count as failed (and its replica to take
/// over): short, so failover tests stay quick.
const NODE_TIMEOUT_MS: u64 = 1000;

struct Node {
    port: u16,
    child: Option<Child>,
}

pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: std::path::PathBuf,
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_node_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs redis-cli against one node; its output, empty when it failed.
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl RedisCluster {
    /// Starts `masters` primaries with `replicas` replicas each, and waits
    /// until every node says the cluster is ok.
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("edgewire-cluster-{}", free_node_port()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut nodes = Vec::new();
        for _ in 0..masters * (1 + replicas) {
            let port = free_node_port();
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                    // A replica takes over however long since it last heard
                    // its master (which, idle, pings every 10 s).
                    "--cluster-replica-validity-factor",
                    "0",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--protected-mode",
                    "no",
                    "--dir",
                ])
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (the README's test command installs it)");
            nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { nodes, dir };
        for node in &cluster.nodes {
            cluster
                .until(&format!("node {} answers", node.port), || {
                    cli(node.port, &["PING"]).trim() == "PONG"
                })
                .await;
        }
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli must be installed (it comes with redis-server)");
        assert!(created.success(), "redis-cli --cluster create failed");
        cluster.wait_ok().await;
        cluster
    }

    /// `redis+cluster://` naming every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    async fn until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + DEADLINE * 2;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis cluster: {what} before the deadline"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees on
    /// the masters (a failover has finished).
    pub async fn wait_ok(&self) {
        let ports = self.live_ports();
        self.until("every node reports cluster_state:ok", || {
            ports
                .iter()
                .all(|p| cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        })
        .await;
    }

    /// The port of the live master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> Option<u16> {
        let any = *self.live_ports().first()?;
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key]).trim().parse().ok()?;
        // CLUSTER NODES: id addr flags master ping pong epoch state slots...
        let nodes = cli(any, &["CLUSTER", "NODES"]);
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                return None;
            }
            let port: u16 = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
            let serves = fields[8..].iter().any(|range| {
                let mut ends = range.split('-');
                match (
                    ends.next().map(str::parse::<u16>),
                    ends.next().map(str::parse::<u16>),
                ) {
                    (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
                    (Some(Ok(a)), None) => a == slot,
                    _ => false,
                }
            });
            serves.then_some(port)
        })
    }

    /// Kills (SIGKILL) the node on `port`.
    pub fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port)
            && let Some(mut child) = node.child.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until `key`'s slot is served by a live master other than `old`.
    pub async fn wait_failover(&self, key: &str, old: u16) {
        self.until("a replica took over the killed master's slots", || {
            self.master_of(key).is_some_and(|p| p != old)
        })
        .await;
        self.wait_ok().await;
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisCluster {
    /// The live node holding a key that matches `pattern` (KEYS on each).
    pub fn node_holding(&self, pattern: &str) -> Option<(u16, String)> {
        self.live_ports().into_iter().find_map(|port| {
            let keys = cli(port, &["KEYS", pattern]);
            let key = keys.lines().next()?.trim().to_owned();
            (!key.is_empty()).then_some((port, key))
        })
    }
}

impl RedisCluster {
    /// The ports of the live masters.
    pub fn masters(&self) -> Vec<u16> {
        let Some(any) = self.live_ports().first().copied() else {
            return Vec::new();
        };
        cli(any, &["CLUSTER", "NODES"])
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                (fields.len() > 2 && fields[2].contains("master") && !fields[2].contains("fail"))
                    .then(|| fields[1].split(['@', ':']).nth(1)?.parse().ok())
                    .flatten()
            })
            .collect()
    }

    /// Moves `key`'s slot, with every key in it, to the master on `to`, as
    /// `redis-cli --cluster reshard` does slot by slot: IMPORTING and
    /// MIGRATING, MIGRATE of the keys, then SETSLOT NODE on every master.
    pub async fn migrate_slot(&self, key: &str, to: u16) {
        let from = self.master_of(key).expect("a master holds the key's slot");
        assert_ne!(from, to, "the slot is already there");
        let slot = cli(from, &["CLUSTER", "KEYSLOT", key]).trim().to_owned();
        let id = |port: u16| cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let (from_id, to_id) = (id(from), id(to));
        cli(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        cli(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"]);
            let keys: Vec<&str> = keys
                .lines()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .collect();
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            cli(from, &args);
        }
        for port in self.masters() {
            cli(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        self.until("the slot is served by its new master", || {
            self.master_of(key) == Some(to)
        })
        .await;
    }
}
