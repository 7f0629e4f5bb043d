//! Reading settings: each value looked up (or its default), parsed, and
//! every problem collected so that one start names them all.

use std::time::Duration;

use super::SETTINGS;

pub(super) struct Reader<'a> {
    pub(super) lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(super) problems: Vec<String>,
}

impl Reader<'_> {
    pub(super) fn raw(&self, key: &str) -> Option<String> {
        (self.lookup)(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    pub(super) fn text(&self, key: &str) -> Option<String> {
        self.raw(key)
    }

    pub(super) fn list(&self, key: &str) -> Option<Vec<String>> {
        self.raw(key).map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
    }

    /// Parses `key` (or its default); records a problem and returns a placeholder
    /// from the default when it does not parse.
    pub(super) fn parsed<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> T
    where
        T: Default,
    {
        let default = SETTINGS
            .iter()
            .find(|s| s.env == key)
            .and_then(|s| s.default);
        let value = self.raw(key).or_else(|| default.map(str::to_owned));
        let Some(value) = value else {
            self.problems.push(format!("{key}: required"));
            return T::default();
        };
        match parse(&value) {
            Ok(v) => v,
            Err(e) => {
                self.problems.push(format!("{key}: {e} (got {value:?})"));
                default.and_then(|d| parse(d).ok()).unwrap_or_default()
            }
        }
    }
}

pub(super) fn whole(v: &str) -> Result<usize, String> {
    v.parse::<usize>()
        .map_err(|_| "expected a whole number".to_owned())
}

pub(super) fn positive(v: &str) -> Result<usize, String> {
    match whole(v)? {
        0 => Err("must be greater than zero".into()),
        n => Ok(n),
    }
}

pub(super) fn positive_u32(v: &str) -> Result<u32, String> {
    let n = positive(v)?;
    u32::try_from(n).map_err(|_| "too large".to_owned())
}

pub(super) fn positive_duration(v: &str) -> Result<Duration, String> {
    let d = parse_duration(v)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// Parses a size in bytes: a whole number, or one with `KiB`, `MiB` or `GiB`
/// (powers of 1024; `K`, `M`, `G`, `KB`, `MB`, `GB` read the same).
pub fn parse_bytes(v: &str) -> Result<usize, String> {
    let v = v.trim();
    let digits = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(digits);
    let bad = || "expected bytes such as 65536, 512KiB, 4MiB or 1GiB".to_owned();
    let n: usize = number.parse().map_err(|_| bad())?;
    let scale: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// Parses a duration, in the one format every setting and flag uses: whole
/// seconds (`30`), or humantime's units (`500ms`, `30s`, `10m`, `1h`, `7d`,
/// `1h 30m`), so `serve --history-ttl 1h` and `token --ttl 1h` read alike.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(seconds) = v.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(v).map_err(|e| {
        format!("{e}: expected whole seconds or a duration such as 500ms, 30s, 10m, 1h or 7d")
    })
}
