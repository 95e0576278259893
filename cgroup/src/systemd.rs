//! The systemd cgroup driver: each container is a transient scope unit
//! that systemd knows, accounts and delegates, instead of a cgroupfs
//! directory systemd would not know about (and could garbage-collect or
//! fight over).
//!
//! Chosen by `SystemdCgroup = true` in the runtime options or by a
//! `slice:prefix:name` cgroupsPath, as runc does, on a host whose PID 1 is
//! systemd. The unit is made through systemd's D-Bus API
//! (StartTransientUnit with Delegate=yes, the init stage's pid, and the
//! spec's resources as unit properties), over the client cgroups-rs
//! already carries (zbus, in the tree through cgroups-rs: no new crate).
//! What systemd has no property for (device rules, hugetlb, blkio
//! throttles, `unified` keys) is written to the unit's cgroup files, as
//! runc does; so are the stats, the freezer, OOM events and kill-all,
//! through [`FsCgroup`] at the path systemd gives the unit.

use std::path::Path;
use std::time::{Duration, Instant};

use cgroups_rs::systemd::{Property, SystemdClient};
use oci_spec::runtime::LinuxResources;
use zbus::zvariant::Value;

use crate::path::SystemdNames;
use crate::{CgroupError, Entry, FsCgroup, Layout, Manager, Metrics, OomSource};

/// Whether systemd runs this host (sd_booted(3): /run/systemd/system).
pub fn running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// How long systemd may take to put the first process into a new unit.
const START_TIMEOUT: Duration = Duration::from_secs(10);

pub struct SystemdCgroup {
    fs: FsCgroup,
    names: SystemdNames,
    client: SystemdClient<'static>,
    /// Whether the unit exists (it is made with its first process).
    started: bool,
}

fn err(names: &SystemdNames, what: &str, e: impl std::fmt::Display) -> CgroupError {
    CgroupError::Systemd { unit: names.unit.clone(), message: format!("{what}: {e}") }
}

/// The properties every container's unit starts with.
fn base_properties(names: &SystemdNames, id: &str, layout: Layout) -> Vec<Property<'static>> {
    let mut props: Vec<Property<'static>> = vec![
        ("Description", Value::from(format!("containerd-shim-rust-v2 container {id}"))),
        ("DefaultDependencies", Value::Bool(false)),
        ("CPUAccounting", Value::Bool(true)),
        ("MemoryAccounting", Value::Bool(true)),
        ("TasksAccounting", Value::Bool(true)),
        (if layout == Layout::Unified { "IOAccounting" } else { "BlockIOAccounting" }, Value::Bool(true)),
    ];
    if names.unit.ends_with(".slice") {
        // A slice's parent is given with Wants= (runc does the same).
        props.push(("Wants", Value::from(names.slice.clone())));
    } else {
        props.push(("Slice", Value::from(names.slice.clone())));
        // The container manages its own cgroup below the unit.
        props.push(("Delegate", Value::Bool(true)));
    }
    props
}

/// CPU shares (2 to 262144) as cgroup v2's weight (1 to 10000), runc's
/// formula.
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + ((shares.saturating_sub(2)) * 9999) / 262142
}

/// The spec's resources that systemd has a property for.
pub fn resource_properties(r: &LinuxResources, layout: Layout) -> Result<Vec<Property<'static>>, String> {
    let v2 = layout == Layout::Unified;
    let mut props: Vec<Property<'static>> = Vec::new();
    if let Some(m) = r.memory() {
        if let Some(limit) = m.limit().filter(|l| *l > 0) {
            props.push((if v2 { "MemoryMax" } else { "MemoryLimit" }, Value::U64(limit as u64)));
        }
        if v2 {
            if let Some(low) = m.reservation().filter(|l| *l > 0) {
                props.push(("MemoryLow", Value::U64(low as u64)));
            }
            // The spec's swap is memory+swap; v2's MemorySwapMax is swap alone.
            if let (Some(swap), Some(limit)) = (m.swap().filter(|s| *s > 0), m.limit().filter(|l| *l > 0)) {
                props.push(("MemorySwapMax", Value::U64(swap.saturating_sub(limit) as u64)));
            }
        }
    }
    if let Some(c) = r.cpu() {
        if let Some(shares) = c.shares().filter(|s| *s > 0) {
            if v2 {
                props.push(("CPUWeight", Value::U64(shares_to_weight(shares))));
            } else {
                props.push(("CPUShares", Value::U64(shares)));
            }
        }
        let period = c.period().unwrap_or(0);
        if period != 0 {
            props.push(("CPUQuotaPeriodUSec", Value::U64(period)));
        }
        if let Some(quota) = c.quota().filter(|q| *q > 0) {
            let period = if period == 0 { 100_000 } else { period };
            // CPUQuotaPerSecUSec: microseconds of CPU per second; systemd
            // keeps it in 10 ms steps, so round up (runc does).
            let mut per_sec = (quota as u64).saturating_mul(1_000_000) / period;
            if per_sec % 10_000 != 0 {
                per_sec = (per_sec / 10_000 + 1) * 10_000;
            }
            props.push(("CPUQuotaPerSecUSec", Value::U64(per_sec)));
        }
        if v2 {
            if let Some(cpus) = c.cpus().as_deref().filter(|c| !c.is_empty()) {
                props.push(("AllowedCPUs", Value::from(cpu_mask(cpus)?)));
            }
            if let Some(mems) = c.mems().as_deref().filter(|m| !m.is_empty()) {
                props.push(("AllowedMemoryNodes", Value::from(cpu_mask(mems)?)));
            }
        }
    }
    if let Some(p) = r.pids() {
        // -1 is "no limit": systemd's infinity.
        let max = if p.limit() > 0 { p.limit() as u64 } else { u64::MAX };
        props.push(("TasksMax", Value::U64(max)));
    }
    if v2 {
        if let Some(weight) = r.block_io().as_ref().and_then(|b| b.weight()).filter(|w| *w > 0) {
            // blkio weight 10..1000 as io weight 1..10000 (runc's formula).
            props.push(("IOWeight", Value::U64(1 + ((weight as u64).saturating_sub(10) * 9999) / 990)));
        }
    }
    Ok(props)
}

/// The spec's device rules (the defaults appended) as DevicePolicy and
/// DeviceAllow, as runc's systemd driver makes them: the rules are played
/// in order from deny-all (last match wins, as in the v1 devices cgroup),
/// and what is allowed at the end is listed for a `strict` policy, so
/// systemd's own device filter agrees with ours and a re-apply of the unit
/// by systemd does not open the devices up. systemd has no deny rules: a
/// list whose end state is "allow all but ..." becomes strict with nothing
/// listed (our own filter then holds the exceptions; runc does the same),
/// and allow-all becomes `auto`. `*:N` rules have no systemd form and are
/// left to our filter, which systemd's is ANDed with on v2. None when the
/// spec has no device rules: the unit keeps what it has.
pub fn device_properties(r: &LinuxResources) -> Option<Vec<Property<'static>>> {
    use std::collections::BTreeMap;
    let rules = r.devices().as_ref()?;
    // (type, major, minor) -> permissions, with -1 as the wildcard.
    let mut allowed: BTreeMap<(char, i64, i64), String> = BTreeMap::new();
    let mut default_allow = false;
    for rule in rules {
        let typ = match rule.typ().map(|t| t.as_str().to_string()).as_deref() {
            None | Some("a") => 'a',
            Some("c") | Some("u") => 'c',
            Some("b") => 'b',
            Some(_) => continue,
        };
        let access = rule.access().clone().filter(|a| !a.is_empty()).unwrap_or_else(|| "rwm".into());
        let major = rule.major().filter(|m| *m >= 0).unwrap_or(-1);
        let minor = rule.minor().filter(|m| *m >= 0).unwrap_or(-1);
        if typ == 'a' {
            // A rule for every device resets the list (runc's emulator).
            default_allow = rule.allow();
            allowed.clear();
            continue;
        }
        let key = (typ, major, minor);
        if rule.allow() == default_allow {
            // Back to the default for these permissions: take them off.
            if let Some(perms) = allowed.get_mut(&key) {
                perms.retain(|p| !access.contains(p));
                if perms.is_empty() {
                    allowed.remove(&key);
                }
            }
        } else {
            let perms = allowed.entry(key).or_default();
            for p in access.chars().filter(|p| "rwm".contains(*p)) {
                if !perms.contains(p) {
                    perms.push(p);
                }
            }
        }
    }
    let none = || Value::new(Vec::<(String, String)>::new());
    if default_allow {
        if allowed.is_empty() {
            return Some(vec![("DevicePolicy", Value::from("auto")), ("DeviceAllow", none())]);
        }
        log::warn!("systemd has no deny device rules: the unit's device policy denies all, the shim's own filter allows the rest");
        return Some(vec![("DevicePolicy", Value::from("strict")), ("DeviceAllow", none())]);
    }
    let mut list: Vec<(String, String)> = Vec::new();
    for ((typ, major, minor), perms) in allowed {
        let group = if typ == 'c' { "char" } else { "block" };
        let path = match (major, minor) {
            (-1, -1) => format!("{group}-*"),
            (-1, _) => {
                log::warn!("systemd has no {typ} *:{minor} device rule: left to the shim's own filter");
                continue;
            }
            // systemd 240 and later take {char,block}-MAJOR.
            (_, -1) => format!("{group}-{major}"),
            _ => format!("/dev/{group}/{major}:{minor}"),
        };
        let mut sorted: Vec<char> = perms.chars().collect();
        sorted.sort_by_key(|p| "rwm".find(*p));
        list.push((path, sorted.into_iter().collect()));
    }
    Some(vec![("DevicePolicy", Value::from("strict")), ("DeviceAllow", Value::new(list))])
}

/// A cpu or node list (`0-3,8`) as the byte mask systemd's AllowedCPUs
/// takes: bit N of byte N/8, least significant first.
pub fn cpu_mask(list: &str) -> Result<Vec<u8>, String> {
    let mut mask: Vec<u8> = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>(), b.trim().parse::<usize>()),
            None => (part.parse::<usize>(), part.parse::<usize>()),
        };
        let (lo, hi) = match (lo, hi) {
            (Ok(lo), Ok(hi)) if lo <= hi && hi < 8192 => (lo, hi),
            _ => return Err(format!("{list:?} is not a cpu or memory node list")),
        };
        for bit in lo..=hi {
            if mask.len() <= bit / 8 {
                mask.resize(bit / 8 + 1, 0);
            }
            mask[bit / 8] |= 1 << (bit % 8);
        }
    }
    Ok(mask)
}

impl SystemdCgroup {
    /// A handle on the unit `names` names, whose cgroup is `path` (the
    /// expanded slice path and the unit). Nothing exists until the first
    /// process is added.
    pub fn new(path: &str, names: SystemdNames, id: &str) -> Result<SystemdCgroup, CgroupError> {
        let fs = FsCgroup::new(path)?;
        let props = base_properties(&names, id, fs.layout());
        let client = SystemdClient::new(&names.unit, props).map_err(|e| err(&names, "client", e))?;
        Ok(SystemdCgroup { fs, names, client, started: false })
    }

    pub fn unit(&self) -> &str {
        &self.names.unit
    }

    /// Waits until systemd has put `pid` into the unit's cgroup: the start
    /// job runs after StartTransientUnit returns, and the init stage must
    /// not fork before it is in (its child would stay behind).
    fn wait_in(&self, pid: i32) -> Result<(), CgroupError> {
        let want = format!(":{}", self.fs.path());
        let start = Instant::now();
        loop {
            let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            // v2: the one line; v1: the name=systemd line, which systemd
            // moves first.
            let line = cgroups.lines().find(|l| l.starts_with("0::") || l.contains(":name=systemd:"));
            if line.is_some_and(|l| l.ends_with(&want)) {
                return Ok(());
            }
            if start.elapsed() > START_TIMEOUT {
                return Err(err(&self.names, "start", format!("pid {pid} is not in {} after {START_TIMEOUT:?}: {}", self.fs.path(), cgroups.trim())));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Manager for SystemdCgroup {
    fn path(&self) -> &str {
        self.fs.path()
    }

    fn add_proc(&mut self, pid: i32) -> Result<(), CgroupError> {
        if self.started {
            return self.fs.add_proc(pid);
        }
        // A unit of this name left by a container that died with its shim
        // would refuse the start: it goes first.
        if self.client.exists() {
            log::warn!("systemd unit {} exists already: stopping it", self.names.unit);
            self.client.stop().map_err(|e| err(&self.names, "stop a stale unit", e))?;
        }
        self.client.set_pid_prop(cgroups_rs::CgroupPid::from(pid as u64)).map_err(|e| err(&self.names, "pid", e))?;
        self.client.start().map_err(|e| err(&self.names, "StartTransientUnit", e))?;
        self.started = true;
        self.wait_in(pid)?;
        if self.fs.layout() != Layout::Unified {
            // On v1 systemd makes the unit in the hierarchies it manages
            // only; the others (freezer, devices, cpuset, ...) are ours,
            // as runc's systemd driver does.
            self.fs.create()?;
            self.fs.add_proc(pid)?;
        }
        Ok(())
    }

    fn prepare(&mut self) -> Result<Entry, CgroupError> {
        if self.started {
            return self.fs.prepare();
        }
        // The unit is made with its first process: the launcher passes
        // stage 1's pid to add_proc before stage 1 may fork.
        Ok(Entry::ByPid)
    }

    fn set(&mut self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let mut props = resource_properties(resources, self.fs.layout()).map_err(|e| err(&self.names, "resources", e))?;
        props.extend(device_properties(&crate::devices::with_defaults(resources)).unwrap_or_default());
        if !props.is_empty() {
            self.client.set_properties(&props).map_err(|e| err(&self.names, "SetUnitProperties", e))?;
        }
        // Everything, those included, in the files too: what systemd has
        // no property for only goes there, and the rest then holds
        // whatever systemd's own rounding made of it.
        self.fs.set(resources)
    }

    fn procs(&self) -> Result<Vec<i32>, CgroupError> {
        self.fs.procs()
    }

    fn all_procs(&self) -> Result<Vec<i32>, CgroupError> {
        self.fs.all_procs()
    }

    fn kill_all(&self, signal: i32) -> Result<(), CgroupError> {
        self.fs.kill_all(signal)
    }

    fn destroy(&mut self) -> Result<(), CgroupError> {
        // Our own kill first (frozen, so nothing forks past it), then the
        // unit goes; systemd removes its cgroup, and the v1 directories
        // that are ours go with fs.destroy.
        let killed = self.fs.destroy();
        if self.started || self.client.exists() {
            self.client.stop().map_err(|e| err(&self.names, "StopUnit", e))?;
            let start = Instant::now();
            while self.client.exists() && start.elapsed() < START_TIMEOUT {
                std::thread::sleep(Duration::from_millis(5));
            }
            self.started = false;
        }
        killed
    }

    fn v1_mounts(&self) -> Vec<(String, std::path::PathBuf)> {
        self.fs.v1_mounts()
    }

    fn layout(&self) -> Layout {
        self.fs.layout()
    }

    fn freeze(&self) -> Result<(), CgroupError> {
        self.fs.freeze()
    }

    fn thaw(&self) -> Result<(), CgroupError> {
        self.fs.thaw()
    }

    fn stats(&self) -> Result<Metrics, CgroupError> {
        self.fs.stats()
    }

    fn oom_kills(&self) -> u64 {
        self.fs.oom_kills()
    }

    fn oom_source(&self) -> Result<OomSource, CgroupError> {
        self.fs.oom_source()
    }

    fn systemd_unit(&self) -> Option<&str> {
        Some(&self.names.unit)
    }

    fn freezer_dir(&self) -> Option<std::path::PathBuf> {
        self.fs.freezer_dir()
    }
}

/// Stops a unit a dead shim left (containerd's `delete`).
pub fn stop_unit(unit: &str) -> Result<(), CgroupError> {
    let client = SystemdClient::new(unit, Vec::new()).map_err(|e| CgroupError::Systemd { unit: unit.into(), message: e.to_string() })?;
    if client.exists() {
        client.stop().map_err(|e| CgroupError::Systemd { unit: unit.into(), message: format!("StopUnit: {e}") })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxResourcesBuilder;

    #[test]
    fn cpu_masks() {
        assert_eq!(cpu_mask("0").unwrap(), vec![0b1]);
        assert_eq!(cpu_mask("2-4").unwrap(), vec![0b0001_1100]);
        assert_eq!(cpu_mask("0-4,9").unwrap(), vec![0b0001_1111, 0b0000_0010]);
        assert!(cpu_mask("3-1").is_err());
        assert!(cpu_mask("x").is_err());
        assert!(cpu_mask("1-3-4").is_err());
    }

    fn names(props: &[Property<'static>]) -> Vec<&'static str> {
        props.iter().map(|(k, _)| *k).collect()
    }

    #[test]
    fn resources_as_unit_properties() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728},
            "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
            "pids": {"limit": 100},
            "blockIO": {"weight": 500}
        }))
        .unwrap();
        let v2 = resource_properties(&r, Layout::Unified).unwrap();
        assert_eq!(
            names(&v2),
            ["MemoryMax", "MemoryLow", "MemorySwapMax", "CPUWeight", "CPUQuotaPeriodUSec", "CPUQuotaPerSecUSec", "AllowedCPUs", "AllowedMemoryNodes", "TasksMax", "IOWeight"]
        );
        let get = |k: &str| v2.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("MemorySwapMax"), Value::U64(67108864));
        assert_eq!(get("CPUQuotaPerSecUSec"), Value::U64(500_000));
        assert_eq!(get("CPUWeight"), Value::U64(39));
        let v1 = resource_properties(&r, Layout::Hybrid).unwrap();
        assert_eq!(names(&v1), ["MemoryLimit", "CPUShares", "CPUQuotaPeriodUSec", "CPUQuotaPerSecUSec", "TasksMax"]);
        let none = resource_properties(&LinuxResourcesBuilder::default().build().unwrap(), Layout::Unified).unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn device_rules_as_unit_properties() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
                {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rw"},
                {"allow": false, "type": "c", "major": 10, "minor": 229, "access": "w"},
                {"allow": true, "type": "c", "major": 136, "access": "rwm"},
                {"allow": true, "type": "b", "minor": 7, "access": "r"}
            ]
        }))
        .unwrap();
        let props = device_properties(&r).unwrap();
        assert_eq!(props[0], ("DevicePolicy", Value::from("strict")));
        let want = vec![
            ("/dev/char/1:3".to_string(), "rwm".to_string()),
            ("/dev/char/10:229".to_string(), "r".to_string()),
            ("char-136".to_string(), "rwm".to_string()),
        ];
        assert_eq!(props[1], ("DeviceAllow", Value::new(want)));
        let all: LinuxResources = serde_json::from_value(serde_json::json!({"devices": [{"allow": true, "access": "rwm"}]})).unwrap();
        assert_eq!(device_properties(&all).unwrap()[0], ("DevicePolicy", Value::from("auto")));
        let but: LinuxResources = serde_json::from_value(serde_json::json!({"devices": [{"allow": true}, {"allow": false, "type": "b", "major": 8}]})).unwrap();
        assert_eq!(device_properties(&but).unwrap(), vec![("DevicePolicy", Value::from("strict")), ("DeviceAllow", Value::new(Vec::<(String, String)>::new()))]);
        assert!(device_properties(&LinuxResourcesBuilder::default().build().unwrap()).is_none());
    }
}
