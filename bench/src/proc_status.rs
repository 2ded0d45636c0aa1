//! A process's memory from `/proc/<pid>/status` (Linux): resident set size now (`VmRSS`) and its
//! peak so far (`VmHWM`).

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

/// The value of a `Name:   1234 kB` line.
fn kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::kib;

    #[test]
    fn reads_kib_fields() {
        let status = "Name:\tlepus-bench\nVmHWM:\t   14512 kB\nVmRSS:\t   13020 kB\n";
        assert_eq!(kib(status, "VmRSS"), Some(13020));
        assert_eq!(kib(status, "VmHWM"), Some(14512));
        assert_eq!(kib(status, "VmSwap"), None);
    }
}
