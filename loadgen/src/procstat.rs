//! A server process's CPU time and memory from /proc, sampled around each phase.

use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// stime alone: the kernel's work on the process's behalf (copies, page cache, reclaim).
    pub system_ticks: u64,
    pub rss_kb: Option<u64>,
    pub hwm_kb: Option<u64>,
}

pub fn sample(pid: u32) -> Result<ProcSample, String> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|e| format!("reading /proc/{pid}/{file}: {e}"))
    };
    let stat = read("stat")?;
    let status = read("status")?;
    let (user, system) = cpu_ticks(&stat).ok_or_else(|| format!("unparsable /proc/{pid}/stat"))?;
    Ok(ProcSample {
        cpu_ticks: user + system,
        system_ticks: system,
        rss_kb: status_kb(&status, "VmRSS"),
        hwm_kb: status_kb(&status, "VmHWM"),
    })
}

/// utime (field 14) and stime (field 15). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last ')'.
fn cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11); // fields 3..=13
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// A `Key:   1234 kB` line of /proc/PID/status.
fn status_kb(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Clock ticks per second (sysconf(_SC_CLK_TCK)) via getconf, to stay free of unsafe FFI;
/// 100 is the value on every mainstream Linux configuration.
pub fn clock_ticks_per_sec() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_command_name() {
        let stat = "4242 (my (weird) srv) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 75 0 0 20 0 9 0 123 456 789";
        assert_eq!(cpu_ticks(stat), Some((250, 75)));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_status_memory_lines() {
        let status = "Name:\tsrv\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(status_kb(status, "VmRSS"), Some(10240));
        assert_eq!(status_kb(status, "VmHWM"), Some(20480));
        assert_eq!(status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kb.is_some_and(|kb| kb > 0));
        assert!(clock_ticks_per_sec() > 0);
    }
}
