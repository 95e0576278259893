//! containerd's cgroup metrics, read straight from cgroupfs: v1 `Metrics`
//! for legacy and hybrid hosts, v2 `Metrics` for unified ones, with the
//! type names containerd's `ctr task metrics` and CRI decode.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::MessageField;

/// Stats in the version that matches the host's layout.
pub enum Metrics {
    V1(v1::Metrics),
    V2(v2::Metrics),
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn num(path: &Path) -> u64 {
    read(path).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// `max` (unlimited) as u64::MAX, as containerd's Go shim reports it.
fn num_or_max(path: &Path) -> u64 {
    match read(path) {
        Some(s) if s.trim() == "max" => u64::MAX,
        Some(s) => s.trim().parse().unwrap_or(0),
        None => 0,
    }
}

/// "key value" lines.
pub(crate) fn flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines().filter_map(|l| l.split_once(' ')).filter_map(|(k, v)| Some((k, v.trim().parse().ok()?))).collect()
}

type Setter<T> = fn(&mut T, u64);

fn fill<T>(target: &mut T, stat: &HashMap<&str, u64>, fields: &[(&str, Setter<T>)]) {
    for (key, set) in fields {
        set(target, stat.get(key).copied().unwrap_or(0));
    }
}

/// v1 hierarchies by controller name: each controller's cgroup directory.
pub struct V1Dirs {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
}

fn v1_entry(dir: &Path, prefix: &str) -> v1::MemoryEntry {
    v1::MemoryEntry {
        usage: num(&dir.join(format!("{prefix}.usage_in_bytes"))),
        limit: num(&dir.join(format!("{prefix}.limit_in_bytes"))),
        max: num(&dir.join(format!("{prefix}.max_usage_in_bytes"))),
        failcnt: num(&dir.join(format!("{prefix}.failcnt"))),
        ..Default::default()
    }
}

/// Nanoseconds per USER_HZ tick: cpuacct.stat counts in ticks of 1/100 s.
const NS_PER_TICK: u64 = 10_000_000;

pub fn collect_v1(d: &V1Dirs) -> v1::Metrics {
    let mut m = v1::Metrics::new();
    if let Some(dir) = &d.memory {
        let text = read(&dir.join("memory.stat")).unwrap_or_default();
        let stat = flat_keyed(&text);
        let mut mem = v1::MemoryStat::new();
        fill(
            &mut mem,
            &stat,
            &[
                ("cache", |m, v| m.cache = v),
                ("rss", |m, v| m.rss = v),
                ("rss_huge", |m, v| m.rss_huge = v),
                ("mapped_file", |m, v| m.mapped_file = v),
                ("dirty", |m, v| m.dirty = v),
                ("writeback", |m, v| m.writeback = v),
                ("pgpgin", |m, v| m.pg_pg_in = v),
                ("pgpgout", |m, v| m.pg_pg_out = v),
                ("pgfault", |m, v| m.pg_fault = v),
                ("pgmajfault", |m, v| m.pg_maj_fault = v),
                ("inactive_anon", |m, v| m.inactive_anon = v),
                ("active_anon", |m, v| m.active_anon = v),
                ("inactive_file", |m, v| m.inactive_file = v),
                ("active_file", |m, v| m.active_file = v),
                ("unevictable", |m, v| m.unevictable = v),
                ("hierarchical_memory_limit", |m, v| m.hierarchical_memory_limit = v),
                ("hierarchical_memsw_limit", |m, v| m.hierarchical_swap_limit = v),
                ("total_cache", |m, v| m.total_cache = v),
                ("total_rss", |m, v| m.total_rss = v),
                ("total_rss_huge", |m, v| m.total_rss_huge = v),
                ("total_mapped_file", |m, v| m.total_mapped_file = v),
                ("total_dirty", |m, v| m.total_dirty = v),
                ("total_writeback", |m, v| m.total_writeback = v),
                ("total_pgpgin", |m, v| m.total_pg_pg_in = v),
                ("total_pgpgout", |m, v| m.total_pg_pg_out = v),
                ("total_pgfault", |m, v| m.total_pg_fault = v),
                ("total_pgmajfault", |m, v| m.total_pg_maj_fault = v),
                ("total_inactive_anon", |m, v| m.total_inactive_anon = v),
                ("total_active_anon", |m, v| m.total_active_anon = v),
                ("total_inactive_file", |m, v| m.total_inactive_file = v),
                ("total_active_file", |m, v| m.total_active_file = v),
                ("total_unevictable", |m, v| m.total_unevictable = v),
            ],
        );
        mem.usage = MessageField::some(v1_entry(dir, "memory"));
        mem.swap = MessageField::some(v1_entry(dir, "memory.memsw"));
        mem.kernel = MessageField::some(v1_entry(dir, "memory.kmem"));
        mem.kernel_tcp = MessageField::some(v1_entry(dir, "memory.kmem.tcp"));
        m.memory = MessageField::some(mem);
        let oom = read(&dir.join("memory.oom_control")).unwrap_or_default();
        let oom = flat_keyed(&oom);
        m.memory_oom_control = MessageField::some(v1::MemoryOomControl {
            oom_kill_disable: oom.get("oom_kill_disable").copied().unwrap_or(0),
            under_oom: oom.get("under_oom").copied().unwrap_or(0),
            oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
            ..Default::default()
        });
    }
    let mut cpu = v1::CPUStat::new();
    if let Some(dir) = &d.cpuacct {
        let ticks = read(&dir.join("cpuacct.stat")).unwrap_or_default();
        let ticks = flat_keyed(&ticks);
        let per_cpu = read(&dir.join("cpuacct.usage_percpu")).unwrap_or_default();
        cpu.usage = MessageField::some(v1::CPUUsage {
            total: num(&dir.join("cpuacct.usage")),
            user: ticks.get("user").copied().unwrap_or(0) * NS_PER_TICK,
            kernel: ticks.get("system").copied().unwrap_or(0) * NS_PER_TICK,
            per_cpu: per_cpu.split_whitespace().filter_map(|v| v.parse().ok()).collect(),
            ..Default::default()
        });
    }
    if let Some(dir) = &d.cpu {
        let stat = read(&dir.join("cpu.stat")).unwrap_or_default();
        let stat = flat_keyed(&stat);
        cpu.throttling = MessageField::some(v1::Throttle {
            periods: stat.get("nr_periods").copied().unwrap_or(0),
            throttled_periods: stat.get("nr_throttled").copied().unwrap_or(0),
            throttled_time: stat.get("throttled_time").copied().unwrap_or(0),
            ..Default::default()
        });
    }
    m.cpu = MessageField::some(cpu);
    if let Some(dir) = &d.pids {
        let limit = num_or_max(&dir.join("pids.max"));
        m.pids = MessageField::some(v1::PidsStat {
            current: num(&dir.join("pids.current")),
            // containerd reports an unlimited pids.max as 0.
            limit: if limit == u64::MAX { 0 } else { limit },
            ..Default::default()
        });
    }
    if let Some(dir) = &d.blkio {
        let entries = |file: &str| -> Vec<v1::BlkIOEntry> {
            read(&dir.join(file))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split_whitespace();
                    let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
                    let (major, minor) = dev.split_once(':')?;
                    Some(v1::BlkIOEntry {
                        major: major.parse().ok()?,
                        minor: minor.parse().ok()?,
                        op: op.to_string(),
                        value: value.parse().ok()?,
                        ..Default::default()
                    })
                })
                .collect()
        };
        m.blkio = MessageField::some(v1::BlkIOStat {
            io_service_bytes_recursive: entries("blkio.throttle.io_service_bytes_recursive"),
            io_serviced_recursive: entries("blkio.throttle.io_serviced_recursive"),
            ..Default::default()
        });
    }
    m
}

pub fn collect_v2(dir: &Path) -> v2::Metrics {
    let mut m = v2::Metrics::new();
    let text = read(&dir.join("cpu.stat")).unwrap_or_default();
    let mut cpu = v2::CPUStat::new();
    fill(
        &mut cpu,
        &flat_keyed(&text),
        &[
            ("usage_usec", |c, v| c.usage_usec = v),
            ("user_usec", |c, v| c.user_usec = v),
            ("system_usec", |c, v| c.system_usec = v),
            ("nr_periods", |c, v| c.nr_periods = v),
            ("nr_throttled", |c, v| c.nr_throttled = v),
            ("throttled_usec", |c, v| c.throttled_usec = v),
            ("nr_bursts", |c, v| c.nr_bursts = v),
            ("burst_usec", |c, v| c.burst_usec = v),
        ],
    );
    m.cpu = MessageField::some(cpu);

    let text = read(&dir.join("memory.stat")).unwrap_or_default();
    let mut mem = v2::MemoryStat::new();
    fill(
        &mut mem,
        &flat_keyed(&text),
        &[
            ("anon", |m, v| m.anon = v),
            ("file", |m, v| m.file = v),
            ("kernel_stack", |m, v| m.kernel_stack = v),
            ("slab", |m, v| m.slab = v),
            ("sock", |m, v| m.sock = v),
            ("shmem", |m, v| m.shmem = v),
            ("file_mapped", |m, v| m.file_mapped = v),
            ("file_dirty", |m, v| m.file_dirty = v),
            ("file_writeback", |m, v| m.file_writeback = v),
            ("anon_thp", |m, v| m.anon_thp = v),
            ("inactive_anon", |m, v| m.inactive_anon = v),
            ("active_anon", |m, v| m.active_anon = v),
            ("inactive_file", |m, v| m.inactive_file = v),
            ("active_file", |m, v| m.active_file = v),
            ("unevictable", |m, v| m.unevictable = v),
            ("slab_reclaimable", |m, v| m.slab_reclaimable = v),
            ("slab_unreclaimable", |m, v| m.slab_unreclaimable = v),
            ("pgfault", |m, v| m.pgfault = v),
            ("pgmajfault", |m, v| m.pgmajfault = v),
            ("workingset_refault", |m, v| m.workingset_refault = v),
            ("workingset_activate", |m, v| m.workingset_activate = v),
            ("workingset_nodereclaim", |m, v| m.workingset_nodereclaim = v),
            ("pgrefill", |m, v| m.pgrefill = v),
            ("pgscan", |m, v| m.pgscan = v),
            ("pgsteal", |m, v| m.pgsteal = v),
            ("pgactivate", |m, v| m.pgactivate = v),
            ("pgdeactivate", |m, v| m.pgdeactivate = v),
            ("pglazyfree", |m, v| m.pglazyfree = v),
            ("pglazyfreed", |m, v| m.pglazyfreed = v),
            ("thp_fault_alloc", |m, v| m.thp_fault_alloc = v),
            ("thp_collapse_alloc", |m, v| m.thp_collapse_alloc = v),
        ],
    );
    mem.usage = num(&dir.join("memory.current"));
    mem.usage_limit = num_or_max(&dir.join("memory.max"));
    mem.max_usage = num(&dir.join("memory.peak"));
    mem.swap_usage = num(&dir.join("memory.swap.current"));
    mem.swap_limit = num_or_max(&dir.join("memory.swap.max"));
    mem.swap_max_usage = num(&dir.join("memory.swap.peak"));
    m.memory = MessageField::some(mem);

    let text = read(&dir.join("memory.events")).unwrap_or_default();
    let mut events = v2::MemoryEvents::new();
    fill(
        &mut events,
        &flat_keyed(&text),
        &[
            ("low", |e, v| e.low = v),
            ("high", |e, v| e.high = v),
            ("max", |e, v| e.max = v),
            ("oom", |e, v| e.oom = v),
            ("oom_kill", |e, v| e.oom_kill = v),
            ("oom_group_kill", |e, v| e.oom_group_kill = v),
        ],
    );
    m.memory_events = MessageField::some(events);

    let limit = num_or_max(&dir.join("pids.max"));
    m.pids = MessageField::some(v2::PidsStat {
        current: num(&dir.join("pids.current")),
        limit: if limit == u64::MAX { 0 } else { limit },
        ..Default::default()
    });

    let usage = read(&dir.join("io.stat"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (major, minor) = f.next()?.split_once(':')?;
            let kv: HashMap<&str, u64> = f.filter_map(|kv| kv.split_once('=')).filter_map(|(k, v)| Some((k, v.parse().ok()?))).collect();
            Some(v2::IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                rbytes: kv.get("rbytes").copied().unwrap_or(0),
                wbytes: kv.get("wbytes").copied().unwrap_or(0),
                rios: kv.get("rios").copied().unwrap_or(0),
                wios: kv.get("wios").copied().unwrap_or(0),
                ..Default::default()
            })
        })
        .collect();
    m.io = MessageField::some(v2::IOStat { usage, ..Default::default() });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_reads_a_fake_hierarchy() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, s: &str| std::fs::write(d.path().join(f), s).unwrap();
        w("memory.stat", "cache 10\nrss 20\ntotal_inactive_file 5\n");
        w("memory.usage_in_bytes", "4096\n");
        w("memory.limit_in_bytes", "33554432\n");
        w("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
        w("cpuacct.usage", "123456\n");
        w("cpuacct.stat", "user 3\nsystem 4\n");
        w("cpuacct.usage_percpu", "100 200 \n");
        w("cpu.stat", "nr_periods 7\nnr_throttled 1\nthrottled_time 99\n");
        w("pids.current", "3\n");
        w("pids.max", "max\n");
        let dir = Some(d.path().to_path_buf());
        let m = collect_v1(&V1Dirs { memory: dir.clone(), cpu: dir.clone(), cpuacct: dir.clone(), pids: dir.clone(), blkio: None });
        let mem = m.memory.as_ref().unwrap();
        assert_eq!((mem.cache, mem.rss, mem.total_inactive_file), (10, 20, 5));
        assert_eq!(mem.usage.as_ref().unwrap().usage, 4096);
        assert_eq!(mem.usage.as_ref().unwrap().limit, 33554432);
        assert_eq!(m.memory_oom_control.as_ref().unwrap().oom_kill, 2);
        let cpu = m.cpu.as_ref().unwrap();
        assert_eq!(cpu.usage.as_ref().unwrap().total, 123456);
        assert_eq!(cpu.usage.as_ref().unwrap().user, 30_000_000);
        assert_eq!(cpu.usage.as_ref().unwrap().per_cpu, vec![100, 200]);
        assert_eq!(cpu.throttling.as_ref().unwrap().throttled_periods, 1);
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
    }

    #[test]
    fn v2_reads_a_fake_cgroup() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, s: &str| std::fs::write(d.path().join(f), s).unwrap();
        w("cpu.stat", "usage_usec 500\nuser_usec 300\nsystem_usec 200\n");
        w("memory.stat", "anon 1000\nfile 2000\ninactive_file 300\n");
        w("memory.current", "8192\n");
        w("memory.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n");
        w("pids.current", "2\n");
        w("pids.max", "42\n");
        w("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");
        let m = collect_v2(d.path());
        assert_eq!(m.cpu.usage_usec, 500);
        assert_eq!((m.memory.anon, m.memory.usage, m.memory.usage_limit), (1000, 8192, u64::MAX));
        assert_eq!(m.memory_events.oom_kill, 1);
        assert_eq!((m.pids.current, m.pids.limit), (2, 42));
        assert_eq!(m.io.usage[0].wbytes, 20);
    }
}
