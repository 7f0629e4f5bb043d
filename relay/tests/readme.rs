//! The README's commands, run as written: a new user's first hour is a test.
//!
//! Every ```` ```sh ```` block of the root README.md, then of the SDK's and
//! the example app's READMEs ([`DOCUMENTS`]), runs line by line in `bash`,
//! in document order. Within a document the lines share one set of
//! environment variables and one working directory (`cd` sticks) as one
//! terminal would; each document starts afresh at the repository root. What the test adds to a
//! person at a terminal is only what a person does by looking:
//!
//! - **A relay** (`... serve`, in the foreground or with `&`) is started in the
//!   background and waited for on its `/readyz`; from the dev-mode banner the
//!   test learns the token, as the reader copies it. A block that starts a relay
//!   first stops everything earlier blocks left running.
//! - **`NAME=...`** alone on a line (a placeholder such as `TOKEN=eyJ...`) is
//!   given the value the test learned for `NAME`.
//! - **`curl -N`** (a stream) is started, its first events are read and
//!   checked, and it is stopped at the end of its block (or of the next relay
//!   start, when it runs with `&`).
//! - **`redis-server ... &`** is waited for on its port, and a static file
//!   server (`python3 -m http.server PORT`) on its port.
//! - **A plain block of `http://localhost` URLs** (pages the reader opens) is
//!   fetched: each must answer 200.
//! - **Every other line** must exit 0 within its deadline; every `curl` it
//!   runs must get a 2xx status (a `curl` shim early in `PATH` adds
//!   `--write-out` of the status to stderr and changes nothing else).
//! - **Expected output**: comment lines right after a command that look like
//!   output (`# {...}`, `# [...]`, `# event: ...`, `# data: ...`, `# id: ...`,
//!   `# retry: ...`, `#`) are compared with what the command printed: JSON by
//!   shape (the same keys, the same strings, any number or id where the README
//!   shows one), SSE events by name and data.
//! - **A block preceded by** `<!-- readme-test: skip (reason) -->` is skipped,
//!   and the test prints each skip with its reason (interactive tools, cloud
//!   accounts, the test command itself).
//!
//! It uses fixed ports (8080, 8081, 6379) because the README does; cargo runs
//! this file's binary on its own, after the other test binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The documents whose commands run, in this order.
const DOCUMENTS: [&str; 3] = [
    "README.md",
    "sdk-js/README.md",
    "sdk-js/examples/chat/README.md",
];

/// A command that may build the relay (`cargo run --release` on a cold
/// target) gets this long.
const BUILD_DEADLINE: Duration = Duration::from_secs(900);
/// Any other wait: a stream's first event, a port, a plain command.
const DEADLINE: Duration = Duration::from_secs(60);

/// One fenced block of the README.
struct Block {
    /// 1-based line of the opening fence.
    line: usize,
    /// The fence's language (`sh`, or empty for output).
    lang: String,
    /// The block's lines.
    body: Vec<(usize, String)>,
    /// The reason given by a `readme-test: skip` marker before the block.
    skip: Option<String>,
}

/// One command of a block, with the output the README shows for it.
#[derive(Debug)]
struct Step {
    line: usize,
    command: String,
    expected: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn blocks(readme: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut last_marker: Option<String> = None;
    for (i, line) in readme.lines().enumerate() {
        let n = i + 1;
        if let Some(block) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                out.extend(open.take());
            } else {
                block.body.push((n, line.to_owned()));
            }
            continue;
        }
        let trimmed = line.trim();
        if let Some(info) = trimmed.strip_prefix("```") {
            open = Some(Block {
                line: n,
                lang: info.split_whitespace().next().unwrap_or("").to_owned(),
                body: Vec::new(),
                skip: last_marker.take(),
            });
        } else if let Some(rest) = trimmed.strip_prefix("<!-- readme-test: skip") {
            last_marker = Some(rest.trim_end_matches("-->").trim().to_owned());
        } else if !trimmed.is_empty() {
            last_marker = None;
        }
    }
    assert!(open.is_none(), "README has an unclosed code block");
    out
}

/// True for a comment line that shows output rather than explaining.
fn is_output(comment: &str) -> bool {
    let c = comment.trim();
    c.is_empty()
        || c.starts_with('{')
        || c.starts_with('[')
        || ["event:", "data:", "id:", "retry:"]
            .iter()
            .any(|p| c.starts_with(p))
}

fn steps(block: &Block) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    let mut after_command = false;
    for (n, line) in &block.body {
        if let Some((start, mut text)) = pending.take() {
            text.push('\n');
            text.push_str(line);
            if line.trim_end().ends_with('\\') {
                pending = Some((start, text));
            } else {
                out.push(Step {
                    line: start,
                    command: text,
                    expected: Vec::new(),
                });
                after_command = true;
            }
            continue;
        }
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            let comment = comment.strip_prefix(' ').unwrap_or(comment);
            if after_command && is_output(comment) {
                if let Some(step) = out.last_mut() {
                    step.expected.push(comment.to_owned());
                }
            } else {
                after_command = false;
            }
            continue;
        }
        if trimmed.is_empty() {
            after_command = false;
            continue;
        }
        if trimmed.ends_with('\\') {
            pending = Some((*n, line.clone()));
        } else {
            out.push(Step {
                line: *n,
                command: line.clone(),
                expected: Vec::new(),
            });
            after_command = true;
        }
    }
    out
}

/// The command without a trailing ` # comment` (outside quotes).
fn strip_comment(command: &str) -> String {
    let (mut single, mut double) = (false, false);
    let bytes = command.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1].is_ascii_whitespace()) => {
                return command[..i].trim_end().to_owned();
            }
            _ => {}
        }
    }
    command.trim_end().to_owned()
}

/// A process the test started in the background, in its own process group.
struct Background {
    id: usize,
    what: String,
    child: Child,
    output: PathBuf,
    block: usize,
}

impl Background {
    fn stop(mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        eprintln!("readme: {} needed SIGKILL", self.what);
    }
}

/// The terminal the README's commands run in.
struct Terminal {
    root: PathBuf,
    /// The environment a new terminal starts with.
    fresh_env: HashMap<String, String>,
    cwd: PathBuf,
    dir: PathBuf,
    env: HashMap<String, String>,
    learned: HashMap<String, String>,
    background: Vec<Background>,
    counter: usize,
}

impl Drop for Terminal {
    fn drop(&mut self) {
        for b in self.background.drain(..) {
            b.stop();
        }
    }
}

impl Terminal {
    fn new() -> Terminal {
        let root = repo_root().canonicalize().expect("repository root");
        let dir = std::env::temp_dir().join(format!("edgewire-readme-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // The curl shim: the real curl, plus its status on stderr.
        let real_curl = which("curl").expect("curl is on PATH (the test script installs it)");
        let shim = dir.join("bin");
        std::fs::create_dir_all(&shim).expect("shim dir");
        let script = format!(
            "#!/bin/sh\nexec '{}' --write-out '%{{stderr}}readme-test-status %{{http_code}}\\n' \"$@\"\n",
            real_curl.display()
        );
        std::fs::write(shim.join("curl"), script).expect("write shim");
        let _ = Command::new("chmod")
            .args(["+x"])
            .arg(shim.join("curl"))
            .status();
        // A user's shell: no relay settings, none of cargo test's build variables.
        let mut env: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| {
                !k.starts_with("EDGEWIRE_")
                    && !k.starts_with("CARGO_PKG_")
                    && !k.starts_with("CARGO_CRATE_")
                    && !k.starts_with("CARGO_BIN_")
                    && !matches!(
                        k.as_str(),
                        "CARGO_MANIFEST_DIR" | "CARGO_MANIFEST_PATH" | "CARGO_PRIMARY_PACKAGE"
                    )
            })
            .collect();
        let path = env.get("PATH").cloned().unwrap_or_default();
        env.insert("PATH".into(), format!("{}:{path}", shim.display()));
        Terminal {
            fresh_env: env.clone(),
            cwd: root.clone(),
            root,
            dir,
            env,
            learned: HashMap::new(),
            background: Vec::new(),
            counter: 0,
        }
    }

    fn file(&mut self, what: &str) -> PathBuf {
        self.counter += 1;
        self.dir.join(format!("{:03}-{what}", self.counter))
    }

    fn bash(&self, script: &str) -> Command {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(&self.cwd)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `command` in the background with its output in a file.
    fn spawn(&mut self, what: &str, command: &str, block: usize) -> usize {
        let output = self.file(what);
        let file = std::fs::File::create(&output).expect("output file");
        let err = file.try_clone().expect("clone file");
        let child = self
            .bash(command)
            .stdout(file)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("spawn bash");
        self.counter += 1;
        let id = self.counter;
        self.background.push(Background {
            id,
            what: format!("{what}: {command}"),
            child,
            output,
            block,
        });
        id
    }

    fn get(&mut self, id: usize) -> &mut Background {
        match self.background.iter_mut().find(|b| b.id == id) {
            Some(b) => b,
            None => panic!("no background process {id}"),
        }
    }

    fn output_of(&self, id: usize) -> String {
        self.background
            .iter()
            .find(|b| b.id == id)
            .and_then(|b| std::fs::read_to_string(&b.output).ok())
            .unwrap_or_default()
    }

    /// Stops what earlier blocks left running (a relay start replaces them).
    fn stop_before(&mut self, block: usize) {
        let (old, keep): (Vec<_>, Vec<_>) =
            self.background.drain(..).partition(|b| b.block < block);
        self.background = keep;
        for b in old {
            b.stop();
        }
    }

    fn stop_streams_of(&mut self, foreground: &[usize]) {
        let mut keep = Vec::new();
        for b in self.background.drain(..) {
            if foreground.contains(&b.id) {
                b.stop();
            } else {
                keep.push(b);
            }
        }
        self.background = keep;
    }

    /// Runs one foreground line to its end; returns stdout and stderr.
    fn run(&mut self, step: &Step, deadline: Duration) -> (String, String) {
        let env_file = self.file("env");
        let script = format!(
            "set -a\n{}\n__readme_rc=$?\nenv -0 > '{}'\nexit $__readme_rc\n",
            step.command,
            env_file.display()
        );
        let out_file = self.file("stdout");
        let err_file = self.file("stderr");
        let mut child = self
            .bash(&script)
            .stdout(std::fs::File::create(&out_file).expect("stdout file"))
            .stderr(std::fs::File::create(&err_file).expect("stderr file"))
            .process_group(0)
            .spawn()
            .expect("spawn bash");
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if started.elapsed() > deadline {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{}", child.id())])
                    .status();
                panic!(
                    "README line {}: `{}` did not finish within {deadline:?}",
                    step.line, step.command
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out_file).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_file).unwrap_or_default();
        assert!(
            status.success(),
            "README line {}: `{}` failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            step.line,
            step.command
        );
        if let Ok(bytes) = std::fs::read(&env_file) {
            let mut env: HashMap<String, String> = bytes
                .split(|&b| b == 0)
                .filter_map(|pair| std::str::from_utf8(pair).ok())
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            // `cd` sticks, as in a terminal.
            if let Some(pwd) = env.remove("PWD") {
                self.cwd = PathBuf::from(pwd);
            }
            env.retain(|k, _| !matches!(k.as_str(), "_" | "SHLVL" | "OLDPWD"));
            self.env = env;
        }
        (stdout, stderr)
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

/// Sends `GET path` to `addr` and returns the status, if anything answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

fn wait_for(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// The value of `--flag X` in a command.
fn flag<'a>(command: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = command.split_whitespace();
    while let Some(w) = words.next() {
        if w == flag {
            return words.next();
        }
    }
    None
}

/// JSON values alike in shape: the same keys and strings; any number where the
/// README shows a number; any id (`<ms>-<seq>`) or peer id (`<user>.<random>`)
/// where it shows one; any token where it shows `eyJ...`.
fn same_shape(expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            let (mut ek, mut ak): (Vec<_>, Vec<_>) = (e.keys().collect(), a.keys().collect());
            ek.sort();
            ak.sort();
            if ek != ak {
                return Err(format!("keys {ek:?} != {ak:?}"));
            }
            for (k, v) in e {
                same_shape(v, &a[k]).map_err(|m| format!("{k}: {m}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{} items != {}", e.len(), a.len()));
            }
            e.iter().zip(a).try_for_each(|(e, a)| same_shape(e, a))
        }
        (Value::Number(_), Value::Number(_)) => Ok(()),
        (Value::String(e), Value::String(a)) => {
            let is_id = |s: &str| {
                s.split_once('-').is_some_and(|(m, q)| {
                    !m.is_empty()
                        && !q.is_empty()
                        && m.bytes().all(|b| b.is_ascii_digit())
                        && q.bytes().all(|b| b.is_ascii_digit())
                })
            };
            let peer = |s: &str| s.split_once('.').map(|(user, _)| user.to_owned());
            if e == a || (is_id(e) && is_id(a)) || (peer(e).is_some() && peer(e) == peer(a)) {
                Ok(())
            } else {
                Err(format!("{e:?} != {a:?}"))
            }
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{e} != {a}")),
    }
}

/// An SSE event as the README shows it and as curl prints it.
#[derive(Debug, Default)]
struct Event {
    name: Option<String>,
    id: Option<String>,
    data: Option<String>,
}

/// The events of SSE text: blocks with an `event:` or `data:` (comments and
/// `retry:` alone are skipped, as a reader's eye skips them).
fn sse_events(text: &str) -> Vec<Event> {
    let mut events = Vec::new();
    let mut current = Event::default();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if current.name.is_some() || current.data.is_some() {
                events.push(std::mem::take(&mut current));
            }
            current = Event::default();
        } else if let Some(v) = line.strip_prefix("event:") {
            current.name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id:") {
            current.id = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("data:") {
            current.data = Some(v.trim().to_owned());
        }
    }
    events
}

fn check_events(step: &Step, expected: &[Event], actual: &[Event]) {
    for (i, e) in expected.iter().enumerate() {
        let a = &actual[i];
        let at = format!("README line {}, event {}", step.line, i + 1);
        assert_eq!(e.name, a.name, "{at}: event name");
        assert_eq!(e.id.is_some(), a.id.is_some(), "{at}: id line");
        if let (Some(e), Some(a)) = (&e.data, &a.data) {
            let (e, a): (Value, Value) = (
                serde_json::from_str(e).unwrap_or_else(|_| panic!("{at}: README data is not JSON")),
                serde_json::from_str(a).unwrap_or_else(|_| panic!("{at}: data is not JSON: {a}")),
            );
            if let Err(m) = same_shape(&e, &a) {
                panic!("{at}: {m}\nREADME: {e}\nrelay:  {a}");
            }
        }
    }
}

/// Waits until the stream in `index` has printed `n` events (at least one).
fn wait_events(term: &Terminal, index: usize, n: usize, step: &Step) -> Vec<Event> {
    let started = Instant::now();
    loop {
        let text = term.output_of(index);
        let events = sse_events(&text);
        if events.len() >= n.max(1) {
            return events;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "README line {}: the stream printed no event within {DEADLINE:?}:\n{text}",
            step.line
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn check_statuses(step: &Step, stderr: &str) {
    for status in stderr
        .lines()
        .filter_map(|l| l.strip_prefix("readme-test-status "))
    {
        assert!(
            status.starts_with('2'),
            "README line {}: `{}` got HTTP {status}\n{stderr}",
            step.line,
            step.command
        );
    }
}

/// Learns from the dev banner what a reader copies from it.
fn learn_from_banner(term: &mut Terminal, index: usize) {
    let text = term.output_of(index);
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("token (")
            && let Some(token) = lines.next()
        {
            term.learned.insert("TOKEN".into(), token.trim().to_owned());
        }
    }
}

/// Waits until the server started in `index` answers `path` on `addr` as
/// `ready` wants; fails at once if it exits (a build error, a port in use).
fn wait_up(
    term: &mut Terminal,
    index: usize,
    step: &Step,
    addr: &str,
    path: &str,
    ready: fn(Option<u16>) -> bool,
) {
    wait_for(
        &format!("README line {}: a server on {addr}", step.line),
        BUILD_DEADLINE,
        || {
            if matches!(term.get(index).child.try_wait(), Ok(Some(_))) {
                panic!(
                    "README line {}: `{}` exited:\n{}",
                    step.line,
                    step.command,
                    term.output_of(index)
                );
            }
            ready(http_status(addr, path))
        },
    );
}

fn run_step(term: &mut Terminal, block: usize, step: &Step, foreground: &mut Vec<usize>) {
    let command = strip_comment(&step.command);
    let (command, background) = match command.strip_suffix('&') {
        Some(c) => (c.trim_end().to_owned(), true),
        None => (command, false),
    };
    eprintln!(
        "readme: line {}: {}{}",
        step.line,
        command,
        if background { " &" } else { "" }
    );
    // A placeholder the reader fills in by copying.
    if let Some((name, value)) = command.split_once('=')
        && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
        && value.contains("...")
        && !value.contains(char::is_whitespace)
    {
        let learned = term.learned.get(name).cloned().unwrap_or_else(|| {
            panic!(
                "README line {}: {name} is a placeholder the test cannot fill",
                step.line
            )
        });
        term.env.insert(name.to_owned(), learned);
        return;
    }
    if command.contains("-- serve") {
        term.stop_before(block);
        let listen = flag(&command, "--listen").unwrap_or("127.0.0.1:8080");
        let addr = listen.replace("0.0.0.0", "127.0.0.1");
        let index = term.spawn("relay", &command, block);
        wait_up(term, index, step, &addr, "/readyz", |s| s == Some(200));
        // The banner is printed right after the relay is ready.
        if !command.contains("EDGEWIRE_JWT_SECRET") && !term.env.contains_key("EDGEWIRE_JWT_SECRET")
        {
            wait_for("the dev-mode banner", DEADLINE, || {
                term.output_of(index).contains("try it")
            });
            learn_from_banner(term, index);
        }
        return;
    }
    if command.contains("http.server") {
        let port = command
            .split_whitespace()
            .last()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
            .unwrap_or("8000")
            .to_owned();
        let index = term.spawn("static", &command, block);
        wait_up(term, index, step, &format!("127.0.0.1:{port}"), "/", |s| {
            s.is_some()
        });
        return;
    }
    if command.starts_with("redis-server") && background {
        let port = flag(&command, "--port").unwrap_or("6379").to_owned();
        term.spawn("redis", &command, block);
        wait_for(
            &format!("README line {}: redis-server on {port}", step.line),
            DEADLINE,
            || TcpStream::connect(format!("127.0.0.1:{port}")).is_ok(),
        );
        return;
    }
    if command.starts_with("curl ") && command.contains(" -N") {
        let index = term.spawn("stream", &command, block);
        let expected = sse_events(&step.expected.join("\n"));
        let events = wait_events(term, index, expected.len(), step);
        if expected.is_empty() {
            assert!(
                events[0].name.is_some(),
                "README line {}: no event name in the stream's first event",
                step.line
            );
        }
        check_events(step, &expected, &events);
        if !background {
            foreground.push(index);
        }
        return;
    }
    if background {
        term.spawn("background", &command, block);
        return;
    }
    let deadline = if command.contains("cargo ") {
        BUILD_DEADLINE
    } else {
        DEADLINE
    };
    let (stdout, stderr) = term.run(step, deadline);
    check_statuses(step, &stderr);
    if !step.expected.is_empty() {
        let expected_text = step.expected.join("\n");
        if expected_text.trim_start().starts_with(['{', '[']) {
            let e: Value = serde_json::from_str(&expected_text).unwrap_or_else(|err| {
                panic!("README line {}: shown output is not JSON: {err}", step.line)
            });
            let a: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
                panic!(
                    "README line {}: output is not JSON ({err}): {stdout}",
                    step.line
                )
            });
            if let Err(m) = same_shape(&e, &a) {
                panic!("README line {}: {m}\nREADME: {e}\ngot:    {a}", step.line);
            }
        } else {
            check_events(step, &sse_events(&expected_text), &sse_events(&stdout));
        }
    }
}

/// Opens each `http://localhost...` URL of a plain block, as a reader does.
fn open_urls(doc: &str, block: &Block) -> usize {
    let urls: Vec<&str> = block
        .body
        .iter()
        .map(|(_, l)| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if urls.is_empty() || !urls.iter().all(|u| u.starts_with("http://localhost:")) {
        return 0;
    }
    for url in &urls {
        let rest = &url["http://localhost:".len()..];
        let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let status = http_status(
            &format!("127.0.0.1:{port}"),
            if path.is_empty() { "/" } else { path },
        );
        eprintln!("readme: {doc} line {}: open {url}: {status:?}", block.line);
        assert_eq!(status, Some(200), "{doc} line {}: {url}", block.line);
    }
    urls.len()
}

#[test]
fn readme_commands_run_as_written() {
    let mut term = Terminal::new();
    let (mut ran, mut skipped, mut opened) = (0, 0, 0);
    let mut index = 0;
    for doc in DOCUMENTS {
        let text = std::fs::read_to_string(repo_root().join(doc)).expect("document");
        // Each document starts in a new terminal at the repository root, as
        // its text says: nothing exported by an earlier one carries over.
        term.cwd = term.root.clone();
        term.env = term.fresh_env.clone();
        for block in blocks(&text) {
            index += 1;
            if block.lang != "sh" {
                opened += open_urls(doc, &block);
                continue;
            }
            if let Some(reason) = &block.skip {
                skipped += 1;
                let first = block.body.first().map(|(_, l)| l.as_str()).unwrap_or("");
                eprintln!(
                    "readme: SKIPPED {doc} block at line {} {reason}: {first}",
                    block.line
                );
                continue;
            }
            eprintln!("readme: {doc}, block at line {}", block.line);
            let mut foreground = Vec::new();
            for step in steps(&block) {
                run_step(&mut term, index, &step, &mut foreground);
                ran += 1;
            }
            term.stop_streams_of(&foreground);
        }
    }
    eprintln!("readme: {opened} pages opened");
    eprintln!("readme: {ran} commands ran, {skipped} blocks skipped by their markers");
    assert!(ran >= 15, "the README test ran only {ran} commands");
}

#[test]
fn shape_matching_can_fail() {
    use serde_json::json;
    assert!(same_shape(&json!({"id": "1-0"}), &json!({"id": "17-3"})).is_ok());
    assert!(same_shape(&json!({"id": "1-0"}), &json!({"id": "x"})).is_err());
    assert!(same_shape(&json!({"data": "hello"}), &json!({"data": "bye"})).is_err());
    assert!(same_shape(&json!({"a": 1}), &json!({"a": 1, "b": 2})).is_err());
    assert!(same_shape(&json!({"peer": "dev.abc"}), &json!({"peer": "dev.xyz"})).is_ok());
    assert!(same_shape(&json!({"peer": "dev.abc"}), &json!({"peer": "ops.abc"})).is_err());
    let step = Step {
        line: 1,
        command: "curl -s x  # a comment".into(),
        expected: vec!["{\"id\":\"1-0\"}".into()],
    };
    assert_eq!(strip_comment(&step.command), "curl -s x");
    assert_eq!(
        strip_comment("echo '# not a comment'"),
        "echo '# not a comment'"
    );
    let events = sse_events("retry: 2000\n\nevent: welcome\ndata: {}\n\n: ping\n\n");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name.as_deref(), Some("welcome"));
}
