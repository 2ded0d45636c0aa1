//! A process's memory from `/proc/<pid>/status` (Linux): resident set size now (`VmRSS`) and its
//! peak so far (`VmHWM`); and the CPU time it used, from `/proc/<pid>/stat`.

use anyhow::Context;

/// Resident memory of a process, in KiB.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    pub(crate) resident_kib: u64,
    pub(crate) peak_kib: u64,
}

/// Reads the memory figures of process `pid`.
pub(crate) fn read(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| kib(&status, name).with_context(|| format!("no {name} in {path}"));
    Ok(Memory { resident_kib: field("VmRSS")?, peak_kib: field("VmHWM")? })
}

/// The CPU time (user and system) process `pid` has used so far, in seconds. `/proc` counts it
/// in clock ticks of 1/100 s (`USER_HZ`, 100 on Linux whatever the kernel's own tick).
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    ticks(&stat).map(|ticks| ticks as f64 / 100.0).with_context(|| format!("no utime/stime in {path}"))
}

/// utime + stime: fields 14 and 15, counted after the command name in parentheses (which may
/// hold spaces).
fn ticks(stat: &str) -> Option<u64> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The value of a `Name:   1234 kB` line.
fn kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::{kib, ticks};

    #[test]
    fn reads_cpu_ticks_after_a_name_with_spaces() {
        let stat = "4242 (lepus (bench) x) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 4";
        assert_eq!(ticks(stat), Some(281));
    }

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tlepus-bench\nVmHWM:\t   14512 kB\nVmRSS:\t   13020 kB\n";
        assert_eq!(kib(status, "VmRSS"), Some(13020));
        assert_eq!(kib(status, "VmHWM"), Some(14512));
        assert_eq!(kib(status, "VmSwap"), None);
    }
}
