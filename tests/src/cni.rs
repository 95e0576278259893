//! A private CNI network per CRI test instance: a bridge with a unique name
//! and a unique /24 out of 10.88.0.0/16, host-local IPAM keeping its state in
//! the instance's directory, and the loopback plugin (containerd adds `lo`
//! itself). The bridge gets no address and no masquerading: pods get an
//! address on their `eth0` and traffic never leaves the bridge.
//!
//! Dropping it removes the bridge and its veths, the IPAM state and the
//! network namespaces the instance recorded, even after a failed test.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use serde_json::json;

use crate::ctr::{describe, output_within};
use crate::host;

/// Where Debian's containernetworking-plugins puts the plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
const CNI_PACKAGE: &str = "containernetworking-plugins";
const PLUGINS: [&str; 3] = ["bridge", "host-local", "loopback"];
/// Subnet indexes are claimed with one file each here, holding the claimer's
/// pid, so concurrent test processes never share a subnet.
const CLAIM_DIR: &str = "/run/rsv2-it-cni";
/// Third octets handed out: 10.88.<100..=249>.0/24.
const FIRST_INDEX: u8 = 100;
const LAST_INDEX: u8 = 249;

/// Installs containernetworking-plugins with apt when a plugin is missing.
/// Panics, with apt's output, if that fails: a missing prerequisite must fail
/// loudly.
pub fn ensure_plugins() {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let missing = || {
        PLUGINS
            .iter()
            .any(|p| !Path::new(CNI_BIN_DIR).join(p).is_file())
    };
    if !missing() {
        return;
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        output_within(&mut cmd, Duration::from_secs(300)).unwrap_or_else(|o| o)
    };
    let mut out = apt(&["install", "-y", "-qq", CNI_PACKAGE]);
    if !out.status.success() {
        // A fresh machine has no package lists yet.
        apt(&["update", "-qq"]);
        out = apt(&["install", "-y", "-qq", CNI_PACKAGE]);
    }
    assert!(
        out.status.success() && !missing(),
        "the CRI tests need the CNI plugins {PLUGINS:?} in {CNI_BIN_DIR}; \
         `apt-get install {CNI_PACKAGE}` failed\n{}",
        describe(&out)
    );
}

/// The network of one CRI test instance.
pub struct CniNetwork {
    name: String,
    bridge: String,
    index: u8,
    conf_dir: PathBuf,
    ipam_dir: PathBuf,
    claim: PathBuf,
    /// Network namespace files pods of this instance used, for cleanup.
    netns: Mutex<Vec<PathBuf>>,
}

impl CniNetwork {
    /// Claims a subnet and writes the conflist into `dir/net.d`, with IPAM
    /// state in `dir/ipam`. `tag` makes the names unique (e.g. `<pid>x<n>`,
    /// at most 12 characters, since a bridge name has at most 15).
    pub fn create(dir: &Path, tag: &str) -> Self {
        ensure_plugins();
        assert!(
            tag.len() <= 12,
            "CNI tag {tag:?} too long for a bridge name"
        );
        let (index, claim) = claim_subnet();
        let net = Self {
            name: format!("rsv2-{tag}"),
            bridge: format!("rb{tag}"),
            index,
            conf_dir: dir.join("net.d"),
            ipam_dir: dir.join("ipam"),
            claim,
            netns: Mutex::new(Vec::new()),
        };
        // From here on Drop cleans up.
        fs::create_dir_all(&net.conf_dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", net.conf_dir.display()));
        let conflist = json!({
            "cniVersion": "0.4.0",
            "name": net.name,
            "plugins": [{
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": net.subnet() }]],
                    "dataDir": net.ipam_dir.display().to_string(),
                },
            }],
        });
        let path = net.conf_dir.join("10-rsv2.conflist");
        fs::write(
            &path,
            serde_json::to_vec_pretty(&conflist).expect("serialize conflist"),
        )
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        net
    }

    /// The conf dir to give containerd (`cni.conf_dir`).
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// The network's name in the conflist.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bridge link's name.
    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    /// `10.88.<index>.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.88.{}.0/24", self.index)
    }

    /// Whether `ip` lies in [`Self::subnet`].
    pub fn contains(&self, ip: &str) -> bool {
        ip.parse::<Ipv4Addr>()
            .is_ok_and(|a| a.octets()[..3] == [10, 88, self.index])
    }

    /// Addresses host-local holds for pods right now (one file per address
    /// in `<dataDir>/<network>/`).
    pub fn allocated_ips(&self) -> Vec<String> {
        fs::read_dir(self.ipam_dir.join(&self.name))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Host ends of veths enslaved to the bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-o", "link", "show", "master", &self.bridge]);
        let Ok(out) = output_within(&mut cmd, Duration::from_secs(10)) else {
            return Vec::new();
        };
        if !out.status.success() {
            return Vec::new();
        }
        // `5: vethabc@if2: <...> ...`
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// Remembers a pod's network namespace file so Drop can remove it.
    pub fn track_netns(&self, path: &Path) {
        let mut list = self.netns.lock().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|p| p == path) {
            list.push(path.to_path_buf());
        }
    }

    fn delete_link(&self, name: &str) {
        let mut cmd = Command::new("ip");
        cmd.args(["link", "delete", name]);
        match output_within(&mut cmd, Duration::from_secs(10)) {
            Ok(out) if out.status.success() => {}
            Ok(out) | Err(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                if !err.contains("Cannot find device") {
                    eprintln!("[{}] ip link delete {name}: {}", self.name, describe(&out));
                }
            }
        }
    }
}

impl Drop for CniNetwork {
    fn drop(&mut self) {
        let netns = self.netns.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for ns in netns {
            if host::mount_points().contains(&ns) {
                if let Err(e) = umount2(&ns, MntFlags::MNT_DETACH) {
                    eprintln!("[{}] umount {}: {e}", self.name, ns.display());
                }
            }
            if ns.exists() {
                if let Err(e) = fs::remove_file(&ns) {
                    eprintln!("[{}] remove {}: {e}", self.name, ns.display());
                }
            }
        }
        for port in self.bridge_ports() {
            self.delete_link(&port);
        }
        self.delete_link(&self.bridge);
        let _ = fs::remove_dir_all(&self.ipam_dir);
        let _ = fs::remove_dir_all(&self.conf_dir);
        let _ = fs::remove_file(&self.claim);
    }
}

/// Claims a free third octet: no live claim file in [`CLAIM_DIR`] and no
/// route of the host overlapping the /24.
fn claim_subnet() -> (u8, PathBuf) {
    fs::create_dir_all(CLAIM_DIR).unwrap_or_else(|e| panic!("mkdir {CLAIM_DIR}: {e}"));
    let routes = host_routes();
    for index in FIRST_INDEX..=LAST_INDEX {
        let net = u32::from(Ipv4Addr::new(10, 88, index, 0));
        if routes
            .iter()
            .any(|&(addr, len)| overlaps(net, 24, addr, len))
        {
            continue;
        }
        let claim = Path::new(CLAIM_DIR).join(index.to_string());
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&claim)
            {
                Ok(mut f) => {
                    let _ = write!(f, "{}", std::process::id());
                    return (index, claim);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A claim of a process that is gone is stale.
                    let owner: Option<u32> = fs::read_to_string(&claim)
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    if owner.is_some_and(host::exists) {
                        break;
                    }
                    let _ = fs::remove_file(&claim);
                }
                Err(e) => panic!("claim {}: {e}", claim.display()),
            }
        }
    }
    panic!("no free subnet in 10.88.{FIRST_INDEX}-{LAST_INDEX}.0/24 (claims in {CLAIM_DIR})");
}

/// Destinations of the host's IPv4 routes (all tables), as (address, prefix length).
fn host_routes() -> Vec<(u32, u8)> {
    let mut cmd = Command::new("ip");
    cmd.args(["-4", "route", "show", "table", "all"]);
    let out = output_within(&mut cmd, Duration::from_secs(10))
        .unwrap_or_else(|o| panic!("ip route timed out\n{}", describe(&o)));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let mut dest = words.next()?;
            if ["local", "broadcast", "unicast", "blackhole", "unreachable"].contains(&dest) {
                dest = words.next()?;
            }
            if dest == "default" {
                return None;
            }
            let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
            Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len.parse().ok()?))
        })
        .collect()
}

fn overlaps(a: u32, alen: u8, b: u32, blen: u8) -> bool {
    let len = alen.min(blen);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a & mask == b & mask
}

#[cfg(test)]
mod tests {
    use super::overlaps;
    use std::net::Ipv4Addr;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    #[test]
    fn subnet_overlap() {
        assert!(overlaps(ip("10.88.100.0"), 24, ip("10.88.0.0"), 16));
        assert!(overlaps(ip("10.88.100.0"), 24, ip("10.88.100.7"), 32));
        assert!(!overlaps(ip("10.88.100.0"), 24, ip("10.88.101.0"), 24));
        assert!(!overlaps(ip("10.88.100.0"), 24, ip("192.168.0.0"), 16));
        assert!(overlaps(ip("10.88.100.0"), 24, ip("0.0.0.0"), 0));
    }
}
