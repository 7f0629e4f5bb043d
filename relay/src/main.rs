//! The `edgewire` binary: parse the command line, set up logging, run the library.

use std::process::ExitCode;
use std::time::Duration;

use edgewire::auth::Rights;
use edgewire::cli::{self, Cli};
use edgewire::config::{Config, LogFormat};
use edgewire::token::{SigningKey, TokenSpec, mint};
use tokio_util::sync::CancellationToken;

/// mimalloc instead of glibc's malloc: per-thread free lists without arena
/// trimming (glibc shrank and regrew its arenas with mprotect on every burst
/// of POSTs) and less memory held per idle connection. Built without
/// transparent huge pages (`no_thp`): with them, a connect burst spent a
/// fifth of the relay's CPU zeroing 2 MB pages, and RSS grew in 2 MB steps
/// (10,000 idle WebSockets: 5.3 KB -> 4.5 KB per connection, 440 -> 380 ms).
/// mimalloc's 2.x line (`v2`), not 3.x: 3.x kept more freed memory after a
/// connect burst (10,000 idle WebSockets in rooms of 100: 3.36-3.52 KB per
/// connection against 3.03-3.14 KB) and was no faster.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Has mimalloc give a page back to the system as soon as the page is free
/// (its `purge_delay` 0, where the default is 10 ms). mimalloc purges only
/// when it is called, so a relay left idle after a connect burst kept the
/// pages the burst freed: 10,000 idle WebSockets in rooms of 100 held
/// 2,191 B of RSS each, 1,911 B with this; fan-out CPU per delivery was the
/// same within noise (`fanout 100x10 ws`: 8.27 and 8.23 µs). An operator's
/// own `MIMALLOC_PURGE_DELAY` is left alone.
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    /// `mi_option_purge_delay` in mimalloc 2.x's `mi_option_t`
    /// (libmimalloc-sys does not name it).
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    /// Its documented default: found there, the index above is the option.
    const DEFAULT_PURGE_DELAY: std::ffi::c_long = 10;
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: reads and sets one of mimalloc's integer options; called
    // first thing in `main`, before the runtime starts any thread (mimalloc's
    // option setters are not thread-safe).
    unsafe {
        if libmimalloc_sys::mi_option_get(PURGE_DELAY) == DEFAULT_PURGE_DELAY {
            libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        }
    }
}

fn main() -> ExitCode {
    purge_freed_memory_at_once();
    match cli::parse() {
        Cli::Token(args) => match mint(&args.spec, &args.key) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgewire token: {e}");
                ExitCode::from(2)
            }
        },
        Cli::Serve(flags) => {
            let config = match Config::from_lookup(|key| {
                flags.get(key).cloned().or_else(|| std::env::var(key).ok())
            }) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("edgewire: {e}");
                    return ExitCode::from(2);
                }
            };
            init_tracing(&config);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("edgewire: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("edgewire: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(mut config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let dev_secret = if config.needs_dev_secret() {
        let secret = random_secret();
        config.jwt_secret = Some(secret.clone());
        Some(secret)
    } else {
        None
    };
    // Signals first: once the port answers, a SIGTERM is always seen.
    let signals = edgewire::shutdown::Signals::listen();
    let listener = edgewire::server::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // Keys and Redis first: a relay that cannot reach its backend fails here,
    // before it says it is listening.
    let relay = edgewire::Relay::start(config, shutdown.clone()).await?;
    tracing::info!(%addr, "edgewire listening");
    if let Some(secret) = dev_secret {
        print_dev_banner(&secret, addr)?;
    }
    signals.cancel_on_signal(shutdown);
    relay.serve(listener).await?;
    tracing::info!("edgewire stopped");
    Ok(())
}

fn random_secret() -> String {
    match edgewire::token::random_secret() {
        Ok(secret) => secret,
        Err(e) => {
            // Without entropy a dev secret would be guessable; refuse rather than weaken it.
            eprintln!("edgewire: no entropy source for the dev secret: {e}");
            std::process::exit(1);
        }
    }
}

/// Dev mode: print the secret, a ready token for every room and curl lines. This
/// goes to stdout on purpose and never through the logs.
fn print_dev_banner(
    secret: &str,
    addr: std::net::SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let spec = TokenSpec {
        sub: "dev".into(),
        rooms: vec![("*".into(), Rights::ALL)],
        ttl: Duration::from_secs(24 * 3600),
        meta: None,
        audience: None,
        issuer: None,
    };
    let token = mint(
        &spec,
        &SigningKey::Secret(secret.as_bytes().to_vec(), jsonwebtoken::Algorithm::HS256),
    )?;
    let host = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    let banner = format!(
        "\n\
         ========================================================================\n\
         edgewire DEV MODE: no key configured, so a random secret was made.\n\
         Tokens die with this process. NOT FOR PRODUCTION: set EDGEWIRE_JWT_SECRET,\n\
         EDGEWIRE_JWT_PUBLIC_KEY or EDGEWIRE_JWKS_URL.\n\
         ========================================================================\n\
         secret:  {secret}\n\
         token (sub=dev, every room, read+write+retain, 24h):\n\
         {token}\n\n\
         try it (two terminals):\n\
         curl -N 'http://{host}/rooms/lobby?token={token}'\n\
         curl -d 'hello' -H 'Authorization: Bearer {token}' http://{host}/rooms/lobby\n\
         ========================================================================\n"
    );
    // A closed stdout (a pipe whose reader went away) must not stop the relay.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), banner.as_bytes());
    Ok(())
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: log files, journald and
    // `2> file` get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    /// The option index the relay sets is mimalloc's purge delay: a new
    /// mimalloc whose options moved fails here, not silently in production.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_set_to_zero() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        super::purge_freed_memory_at_once();
        // SAFETY: reads one of mimalloc's integer options.
        let delay = unsafe { libmimalloc_sys::mi_option_get(15) };
        assert_eq!(delay, 0);
    }
}
