//! What processes cost: CPU time from /proc/<pid>/stat (utime + stime, all threads), memory
//! from /proc/<pid>/smaps_rollup (RSS and PSS), and whole-machine CPU from /proc/stat.

use std::collections::HashMap;
use std::time::Instant;

fn clock_ticks() -> f64 {
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// `/proc/<pid>/stat` fields after the command name: (state, ppid, utime + stime in ticks).
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let state = f.first()?.chars().next()?;
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((state, ppid, utime + stime))
}

pub fn cpu_ticks(pid: i32) -> Option<u64> {
    stat(pid).filter(|s| s.0 != 'Z').map(|s| s.2)
}

/// CPU seconds a process used, plus those of its children it has waited for (cutime, cstime).
pub fn cpu_seconds_with_children(pid: i32) -> f64 {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks()
}

/// CPU seconds used so far by `pids` (alive ones).
pub fn cpu_seconds(pids: &[i32]) -> f64 {
    pids.iter().filter_map(|p| cpu_ticks(*p)).sum::<u64>() as f64 / clock_ticks()
}

pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The command line of a process, its arguments joined by NUL.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// The systemd unit whose cgroup holds a process: the last `*.service` component of its path
/// in systemd's hierarchy (`name=systemd` on a cgroup-v1 host, the unified one on v2), e.g.
/// `neustream-relay@abc.service`.
pub fn unit_of(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text
        .lines()
        .find_map(|l| l.strip_prefix("1:name=systemd:"))
        .or_else(|| {
            text.lines()
                .find_map(|l| l.split_once(":name=systemd:").map(|x| x.1))
        })
        .or_else(|| text.lines().find_map(|l| l.strip_prefix("0::")))?;
    path.rsplit('/')
        .find(|c| c.ends_with(".service"))
        .map(String::from)
}

pub fn alive(pid: i32) -> bool {
    stat(pid).is_some_and(|s| s.0 != 'Z')
}

/// Every pid on the host.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Descendants of `root` (children, grandchildren...), as host pids.
pub fn descendants(root: i32) -> Vec<i32> {
    let pids = all_pids();
    let parents: HashMap<i32, i32> = pids
        .iter()
        .filter_map(|p| Some((*p, stat(*p)?.1)))
        .collect();
    pids.into_iter()
        .filter(|p| {
            let mut cur = *p;
            for _ in 0..64 {
                match parents.get(&cur) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Descendants of `root` whose command name is one of `names`.
pub fn named_descendants(root: i32, names: &[&str]) -> Vec<i32> {
    descendants(root)
        .into_iter()
        .filter(|p| comm(*p).is_some_and(|c| names.contains(&c.as_str())))
        .collect()
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    pub rss_kib: f64,
    pub pss_kib: f64,
}

/// RSS and PSS of a process (smaps_rollup), summed over `pids`.
pub fn mem(pids: &[i32]) -> Mem {
    let mut total = Mem::default();
    for pid in pids {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
            continue;
        };
        for line in text.lines() {
            let mut f = line.split_whitespace();
            let (Some(name), Some(v)) = (f.next(), f.next()) else {
                continue;
            };
            let v: f64 = v.parse().unwrap_or(0.0);
            match name {
                "Rss:" => total.rss_kib += v,
                "Pss:" => total.pss_kib += v,
                _ => {}
            }
        }
    }
    total
}

/// CPU used by a fixed set of processes over a window.
pub struct CpuMeter {
    start: HashMap<i32, u64>,
    t0: Instant,
}

/// What a `CpuMeter` saw: CPU in % of one core, and how many of its processes ended meanwhile
/// (their time in the window is lost, so a steady-state figure needs 0).
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub percent: f64,
    pub ended: usize,
}

impl CpuMeter {
    pub fn start(pids: &[i32]) -> CpuMeter {
        CpuMeter {
            start: pids
                .iter()
                .filter_map(|p| Some((*p, cpu_ticks(*p)?)))
                .collect(),
            t0: Instant::now(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let wall = self.t0.elapsed().as_secs_f64();
        let mut ticks = 0u64;
        let mut ended = 0;
        for (pid, t0) in &self.start {
            match cpu_ticks(*pid) {
                Some(t1) => ticks += t1.saturating_sub(*t0),
                None => ended += 1,
            }
        }
        CpuUse {
            percent: ticks as f64 / clock_ticks() / wall * 100.0,
            ended,
        }
    }
}

/// Busy CPU of the whole machine (all cores), from /proc/stat.
pub struct SystemMeter {
    busy: u64,
    total: u64,
}

fn system_ticks() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = text.lines().next().unwrap_or("");
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

impl SystemMeter {
    pub fn start() -> SystemMeter {
        let (busy, total) = system_ticks();
        SystemMeter { busy, total }
    }

    /// Busy share of all cores, in % of one core (2 cores fully busy = 200 %).
    pub fn stop(&self) -> f64 {
        let (busy, total) = system_ticks();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        (busy - self.busy) as f64 / (total - self.total).max(1) as f64 * cores * 100.0
    }
}

/// The load averages, for the report's header.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}
