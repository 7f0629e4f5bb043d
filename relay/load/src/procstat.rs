//! CPU time and resident memory of server processes, read from /proc, so a
//! run reports what the server spent rather than what the machine did.

use std::fs;

/// Clock ticks per second of /proc/<pid>/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

/// One reading over a set of processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// User plus system CPU time, in ms.
    pub cpu_ms: u64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
}

/// Sums CPU time and RSS over `pids`; a process that cannot be read counts
/// as zero (it may have exited).
pub fn sample(pids: &[u32]) -> Sample {
    let mut total = Sample::default();
    for pid in pids {
        total.cpu_ms += cpu_ms(&format!("/proc/{pid}")).unwrap_or(0);
        total.rss_kib += rss_kib(&format!("/proc/{pid}")).unwrap_or(0);
    }
    total
}

/// This process's own CPU time, in ms.
pub fn own_cpu_ms() -> u64 {
    cpu_ms("/proc/self").unwrap_or(0)
}

fn cpu_ms(dir: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may hold spaces; fields are counted after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After ')': state is field 3 of the man page, utime 14 and stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) * 1000 / TICKS_PER_SECOND)
}

fn rss_kib(dir: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("{dir}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = sample(&[std::process::id()]);
        assert!(me.rss_kib > 0);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 50 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(own_cpu_ms() > 0);
    }
}
