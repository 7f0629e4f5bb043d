//! `edgewire-load`: runs one load scenario against any server given URL
//! templates, prints a readable table and one JSON line; `compare` turns the
//! JSON lines of a side-by-side run into a ratio table.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use edgewire_load::compare::{self, Labels};
use edgewire_load::subscriber::Ready;
use edgewire_load::{Report, Transport, connect, fanout, publish};

#[derive(Parser)]
#[command(name = "edgewire-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Runtime worker threads (default: one per core).
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// S subscribers over R rooms; publishers POST M stamped messages.
    Fanout(FanoutArgs),
    /// N idle subscribers opened as fast as possible; server RSS per connection.
    Connect(ConnectArgs),
    /// POST throughput with no subscribers.
    Publish(PublishArgs),
    /// A TCP proxy adding a round-trip time (a distant Redis, on loopback).
    DelayProxy {
        /// Address to listen on.
        #[arg(long)]
        listen: std::net::SocketAddr,
        /// Address to forward to.
        #[arg(long)]
        upstream: std::net::SocketAddr,
        /// Round-trip time to add, ms (half each way).
        #[arg(long, default_value_t = 25)]
        rtt_ms: u64,
    },
    /// Ratio table from the JSON lines of runs (files, or - for stdin).
    Compare {
        /// Files holding report lines.
        files: Vec<PathBuf>,
        /// Our server's label.
        #[arg(long, default_value = "edgewire")]
        ours: String,
        /// The baseline's label.
        #[arg(long, default_value = "nchan")]
        baseline: String,
    },
}

#[derive(Args)]
struct Common {
    /// Name runs are compared under.
    #[arg(long, default_value = "run")]
    name: String,
    /// The server's label in reports.
    #[arg(long, default_value = "server")]
    label: String,
    /// Replaces {token} in URL templates.
    #[arg(
        long,
        default_value = "",
        env = "EDGEWIRE_LOAD_TOKEN",
        hide_env_values = true
    )]
    token: String,
    /// Server process ids whose CPU and RSS are measured (repeatable, or comma-separated).
    #[arg(long = "server-pid", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Loopback source addresses to spread connections over (127.0.0.1 upwards).
    #[arg(long, default_value_t = 1)]
    sources: u32,
    /// Rooms.
    #[arg(long, default_value_t = 1)]
    rooms: u64,
    /// Prefix of room names (default: unique per run).
    #[arg(long)]
    room_prefix: Option<String>,
    /// Append the JSON line to this file too.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct Subscribers {
    /// Subscriber URL template, e.g. ws://127.0.0.1:8080/rooms/{room}?token={token} (repeatable: spread round-robin).
    #[arg(long = "sub-url", required = true)]
    sub_urls: Vec<String>,
    /// ws or sse.
    #[arg(long, value_enum, default_value = "ws")]
    transport: Transport,
    /// A subscription counts once a frame or line contains this text (e.g. welcome); default: once the handshake answered.
    #[arg(long)]
    ready_marker: Option<String>,
    /// Connection attempts in flight.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Pause after all subscribers are ready, ms.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
}

impl Subscribers {
    fn ready(&self) -> Ready {
        match &self.ready_marker {
            Some(m) => Ready::Marker(m.clone()),
            None => Ready::Handshake,
        }
    }
}

#[derive(Args)]
struct Messages {
    /// Publish URL template, e.g. http://127.0.0.1:8080/rooms/{room}?token={token} (repeatable).
    #[arg(long = "pub-url", required = true)]
    pub_urls: Vec<String>,
    /// Messages in all.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Body size, bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Concurrent publishing connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
}

#[derive(Args)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    subscribers: Subscribers,
    #[command(flatten)]
    messages: Messages,
    /// Subscribers in all.
    #[arg(long, default_value_t = 100)]
    subs: u64,
    /// Messages per second over all publishers (default: flat out).
    #[arg(long)]
    rate: Option<f64>,
    /// Delivery may stall this long before the run ends with loss, ms.
    #[arg(long, default_value_t = 3000)]
    drain_timeout_ms: u64,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    subscribers: Subscribers,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: u64,
    /// Follow each room's presence (an Edgewire relay's events) and report
    /// when every subscriber saw everyone in its room. Costs the generator
    /// CPU, so connect-rate runs leave it off.
    #[arg(long)]
    follow_presence: bool,
}

#[derive(Args)]
struct PublishArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    messages: Messages,
}

fn prefix(common: &Common) -> String {
    common
        .room_prefix
        .clone()
        .unwrap_or_else(fanout::fresh_prefix)
}

async fn execute(command: Command) -> Result<Option<(Report, Option<PathBuf>)>, String> {
    let (report, out) = match command {
        Command::Fanout(a) => {
            let opts = fanout::Options {
                name: a.common.name.clone(),
                label: a.common.label.clone(),
                sub_urls: a.subscribers.sub_urls.clone(),
                pub_urls: a.messages.pub_urls,
                token: a.common.token.clone(),
                transport: a.subscribers.transport,
                rooms: a.common.rooms,
                subscribers: a.subs,
                messages: a.messages.messages,
                size: a.messages.size,
                rate: a.rate,
                publishers: a.messages.publishers,
                sources: a.common.sources,
                server_pids: a.common.server_pids.clone(),
                ready: a.subscribers.ready(),
                concurrency: a.subscribers.concurrency,
                settle: Duration::from_millis(a.subscribers.settle_ms),
                drain_timeout: Duration::from_millis(a.drain_timeout_ms),
                room_prefix: prefix(&a.common),
            };
            (fanout::run(opts).await, a.common.out)
        }
        Command::Connect(a) => {
            let opts = connect::Options {
                name: a.common.name.clone(),
                label: a.common.label.clone(),
                sub_urls: a.subscribers.sub_urls.clone(),
                token: a.common.token.clone(),
                transport: a.subscribers.transport,
                connections: a.connections,
                rooms: a.common.rooms,
                sources: a.common.sources,
                server_pids: a.common.server_pids.clone(),
                ready: a.subscribers.ready(),
                concurrency: a.subscribers.concurrency,
                settle: Duration::from_millis(a.subscribers.settle_ms),
                room_prefix: prefix(&a.common),
                follow_presence: a.follow_presence,
            };
            (connect::run(opts).await, a.common.out)
        }
        Command::Publish(a) => {
            let opts = publish::Options {
                name: a.common.name.clone(),
                label: a.common.label.clone(),
                pub_urls: a.messages.pub_urls,
                token: a.common.token.clone(),
                rooms: a.common.rooms,
                messages: a.messages.messages,
                size: a.messages.size,
                publishers: a.messages.publishers,
                sources: a.common.sources,
                server_pids: a.common.server_pids.clone(),
                room_prefix: prefix(&a.common),
            };
            (publish::run(opts).await, a.common.out)
        }
        Command::DelayProxy {
            listen,
            upstream,
            rtt_ms,
        } => {
            edgewire_load::delay::run(listen, upstream, Duration::from_millis(rtt_ms))
                .await
                .map_err(|e| format!("delay-proxy: {e}"))?;
            return Ok(None);
        }
        Command::Compare {
            files,
            ours,
            baseline,
        } => {
            let mut text = String::new();
            for file in files {
                let part = if file.as_os_str() == "-" {
                    std::io::read_to_string(std::io::stdin())
                } else {
                    std::fs::read_to_string(&file)
                };
                text.push_str(&part.map_err(|e| format!("{}: {e}", file.display()))?);
                text.push('\n');
            }
            let reports = compare::parse(&text);
            print!("{}", compare::table(&reports, &Labels { ours, baseline }));
            return Ok(None);
        }
    };
    Ok(Some((report.map_err(|e| e.to_string())?, out)))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.threads {
        builder.worker_threads(n.max(1));
    }
    let runtime = match builder.build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("edgewire-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some((report, out))) => {
            print!("{}", report.table());
            println!("{}", report.json());
            if let Some(path) = out {
                let appended = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| writeln!(f, "{}", report.json()));
                if let Err(e) = appended {
                    eprintln!("edgewire-load: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
            // Exit promptly: idle subscriber tasks are already stopped.
            runtime.shutdown_timeout(Duration::from_millis(100));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("edgewire-load: {e}");
            ExitCode::FAILURE
        }
    }
}
