//! The command line: `edgewire serve` (every setting of [`SETTINGS`] as a flag,
//! flags winning over the environment) and `edgewire token` (mint a token).

use std::collections::HashMap;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use jsonwebtoken::Algorithm;

use crate::config::SETTINGS;
use crate::config::parse_duration;
use crate::token::{SigningKey, TokenSpec, parse_room_grant};

/// A parsed command line.
pub enum Cli {
    /// Run the relay; the map holds the settings given as flags, by env name.
    Serve(HashMap<String, String>),
    /// Mint a token.
    Token(TokenArgs),
}

/// Arguments of `edgewire token`.
pub struct TokenArgs {
    /// What the token grants.
    pub spec: TokenSpec,
    /// The key to sign with.
    pub key: SigningKey,
}

fn command() -> Command {
    let serve = Command::new("serve")
        .about("Run the relay (dev mode with a random secret when no key is configured)")
        .long_about(
            "Run the relay. Every setting is a flag here and an environment variable of \
             the same name (flags win). Durations are whole seconds, or a number with a unit: 500ms, 30s, 10m, 1h, 7d.\n\n\
             With no EDGEWIRE_JWT_SECRET, EDGEWIRE_JWT_PUBLIC_KEY or EDGEWIRE_JWKS_URL the relay \
             starts in dev mode: it makes a random secret and prints a ready token and a curl line.",
        )
        .args(SETTINGS.iter().map(|s| {
            let help = match s.default {
                Some(d) => format!("{} [env {}, default {d}]", s.help, s.env),
                None => format!("{} [env {}]", s.help, s.env),
            };
            Arg::new(s.flag).long(s.flag).value_name("VALUE").help(help)
        }));
    let token = Command::new("token")
        .about("Print a signed token (for backends, tests and dev)")
        .after_help(
            "Example: edgewire token --sub alice --room 'game-*=read,write' --ttl 1h\n\
             A token stays valid for EDGEWIRE_JWT_LEEWAY (30 s by default) past its exp.",
        )
        .arg(Arg::new("sub").long("sub").required(true).help("the user (sub claim)"))
        .arg(
            Arg::new("room")
                .long("room")
                .action(ArgAction::Append)
                .value_name("PATTERN=RIGHTS")
                .help("room pattern and rights, e.g. 'game-*=read,write' (repeatable; rights: read, write, retain) [default '*=read,write']"),
        )
        .arg(
            Arg::new("ttl")
                .long("ttl")
                .default_value("1h")
                .help("lifetime: 90s, 30m, 1h, 7d (the relay still accepts a token for EDGEWIRE_JWT_LEEWAY, 30 s by default, past its exp)")
                .long_help(
                    "Lifetime of the token: whole seconds or 500ms, 90s, 30m, 1h, 7d.\n\n\
                     The relay accepts a token until exp plus EDGEWIRE_JWT_LEEWAY (30 s by \
                     default, for clock skew), so --ttl 1s still works for about 31 s. Test \
                     expiry against a relay started with --jwt-leeway 0.",
                ),
        )
        .arg(Arg::new("meta").long("meta").value_name("JSON").help("meta claim shown in presence (at most 1 KiB)"))
        .arg(Arg::new("aud").long("aud").help("aud claim"))
        .arg(Arg::new("iss").long("iss").help("iss claim"))
        .arg(
            Arg::new("secret")
                .long("jwt-secret")
                .env("EDGEWIRE_JWT_SECRET")
                .hide_env_values(true)
                .help("HMAC secret to sign with"),
        )
        .arg(Arg::new("private-key").long("private-key").value_name("PEM").help("sign with this private key instead of the secret"))
        .arg(Arg::new("alg").long("alg").help("HS256/384/512 with a secret (default HS256); RS256/384/512, ES256/384 or EdDSA with --private-key"))
        .arg(Arg::new("kid").long("kid").help("key id for the header (with --private-key)"));
    Command::new("edgewire")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A minimal edge relay: rooms, presence and messages over WebSocket, SSE and POST")
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(serve)
        .subcommand(token)
}

/// Parses the process arguments; exits with clap's message on misuse.
pub fn parse() -> Cli {
    match parse_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    }
}

/// Parses arguments (the first is the program name).
pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut cmd = command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    match matches.subcommand() {
        Some(("serve", m)) => Ok(Cli::Serve(
            SETTINGS
                .iter()
                .filter_map(|s| {
                    m.get_one::<String>(s.flag)
                        .map(|v| (s.env.to_owned(), v.clone()))
                })
                .collect(),
        )),
        Some(("token", m)) => token_args(m)
            .map(Cli::Token)
            .map_err(|msg| cmd.error(clap::error::ErrorKind::InvalidValue, msg)),
        _ => Err(cmd.error(
            clap::error::ErrorKind::MissingSubcommand,
            "a subcommand is required",
        )),
    }
}

fn token_args(m: &ArgMatches) -> Result<TokenArgs, String> {
    let get = |name: &str| m.get_one::<String>(name).cloned();
    let rooms = match m.get_many::<String>("room") {
        Some(values) => values
            .map(|v| parse_room_grant(v).map_err(|e| e.0))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![(
            "*".to_owned(),
            crate::auth::Rights::READ.union(crate::auth::Rights::WRITE),
        )],
    };
    let ttl: Duration = parse_duration(&get("ttl").unwrap_or_else(|| "1h".into()))
        .map_err(|e| format!("--ttl: {e}"))?;
    let meta = match get("meta") {
        Some(text) => {
            Some(serde_json::from_str(&text).map_err(|e| format!("--meta is not JSON: {e}"))?)
        }
        None => None,
    };
    let alg = match get("alg") {
        Some(a) => Some(
            a.parse::<Algorithm>()
                .map_err(|_| format!("unknown algorithm {a:?}"))?,
        ),
        None => None,
    };
    let key = match (get("private-key"), get("secret")) {
        (Some(path), _) => {
            let pem = std::fs::read(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
            let alg = alg.ok_or("--private-key needs --alg (RS256, ES256, EdDSA, ...)")?;
            SigningKey::Pem {
                pem,
                alg,
                kid: get("kid"),
            }
        }
        (None, Some(secret)) => {
            SigningKey::Secret(secret.into_bytes(), alg.unwrap_or(Algorithm::HS256))
        }
        (None, None) => {
            return Err(
                "no key: set EDGEWIRE_JWT_SECRET or pass --jwt-secret or --private-key".into(),
            );
        }
    };
    let spec = TokenSpec {
        sub: get("sub").unwrap_or_default(),
        rooms,
        ttl,
        meta,
        audience: get("aud"),
        issuer: get("iss"),
    };
    Ok(TokenArgs { spec, key })
}
