//! The device rules every container gets on top of its spec's.
//!
//! runc appends its AllowedDevices to every container's rules (last match
//! wins, so they hold whatever the spec says): the nodes it creates in /dev
//! and the pty devices. We append the same read/write/mknod rules, except
//! runc's blanket `c *:* m` and `b *:* m`: the device rules must deny mknod
//! of a host disk, not only its open.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources};

fn allow(major: i64, minor: Option<i64>) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default().allow(true).typ(LinuxDeviceType::C).major(major).access("rwm");
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().expect("valid device rule")
}

/// /dev/null, zero, full, random, urandom, tty, ptmx, every pty, and
/// /dev/net/tun (runc dropped it in 1.2.0 and put it back in 1.2.4, because
/// containers that use it broke).
pub fn default_rules() -> Vec<LinuxDeviceCgroup> {
    vec![
        allow(1, Some(3)),
        allow(1, Some(5)),
        allow(1, Some(7)),
        allow(1, Some(8)),
        allow(1, Some(9)),
        allow(5, Some(0)),
        allow(5, Some(2)),
        allow(136, None),
        allow(10, Some(200)),
    ]
}

/// `resources` with the default rules after the spec's, when it has device
/// rules at all, and every missing major or minor made an explicit -1.
/// cgroups-rs 0.5.1's v1 writer turns a missing number into 0, so the rule
/// `c 136:* rwm` (every pty) landed as `c 136:0 rwm`: only /dev/pts/0
/// opened, and a second terminal failed with EPERM (issue #13). It writes
/// -1 as `*`; the v2 filter (ebpf.rs) takes either as a wildcard.
pub fn with_defaults(resources: &LinuxResources) -> LinuxResources {
    let mut r = resources.clone();
    if let Some(mut rules) = r.devices().clone() {
        rules.extend(default_rules());
        for rule in &mut rules {
            if rule.major().is_none() {
                rule.set_major(Some(-1));
            }
            if rule.minor().is_none() {
                rule.set_minor(Some(-1));
            }
        }
        r.set_devices(Some(rules));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxResourcesBuilder;

    #[test]
    fn defaults_follow_the_spec_rules() {
        let deny_all = LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap();
        let r = LinuxResourcesBuilder::default().devices(vec![deny_all.clone()]).build().unwrap();
        let rules = with_defaults(&r).devices().clone().unwrap();
        // The spec's deny-all first, its wildcards made explicit.
        let mut explicit = deny_all.clone();
        explicit.set_major(Some(-1));
        explicit.set_minor(Some(-1));
        assert_eq!(rules[0], explicit);
        assert_eq!(rules.len(), 1 + default_rules().len());
        assert!(rules.iter().all(|d| d.major() != Some(-1) || !d.allow()), "no wildcard-major allow: {rules:?}");
        // Wildcards are explicit, for cgroups-rs's v1 writer.
        assert!(rules.iter().all(|d| d.major().is_some() && d.minor().is_some()), "{rules:?}");
        let ptys = rules.iter().find(|d| d.major() == Some(136)).unwrap();
        assert_eq!(ptys.minor(), Some(-1));
        let none = LinuxResourcesBuilder::default().build().unwrap();
        assert!(with_defaults(&none).devices().is_none());
    }
}
