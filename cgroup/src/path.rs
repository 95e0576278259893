//! Turning `linux.cgroupsPath` into a cgroupfs path.

/// Resolves a cgroupsPath to a path below the cgroup root.
///
/// - absolute (`/default/ID`, what ctr sends): used as is;
/// - relative: below the root, as runc's cgroupfs driver does;
/// - systemd form `slice:prefix:name`: there is no systemd driver yet, so it
///   maps to the path systemd would create, `/a.slice/a-b.slice/prefix-name.scope`,
///   as runc does when it expands a slice; the caller logs that it did;
/// - empty: `/rsv2/ID`.
pub fn resolve(cgroups_path: Option<&str>, id: &str) -> (String, bool) {
    let Some(p) = cgroups_path.filter(|p| !p.is_empty()) else {
        return (format!("/rsv2/{id}"), false);
    };
    if let Some((slice, prefix, name)) = systemd_form(p) {
        let mut path = expand_slice(if slice.is_empty() { "system.slice" } else { slice });
        let unit = if name.ends_with(".slice") { name.to_string() } else if prefix.is_empty() { format!("{name}.scope") } else { format!("{prefix}-{name}.scope") };
        path.push('/');
        path.push_str(&unit);
        return (path, true);
    }
    if p.starts_with('/') {
        (p.to_string(), false)
    } else {
        (format!("/{p}"), false)
    }
}

fn systemd_form(p: &str) -> Option<(&str, &str, &str)> {
    if p.starts_with('/') {
        return None;
    }
    let mut it = p.splitn(3, ':');
    match (it.next(), it.next(), it.next()) {
        (Some(s), Some(pre), Some(n)) => Some((s, pre, n)),
        _ => None,
    }
}

/// `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice` (systemd.slice(5)).
fn expand_slice(slice: &str) -> String {
    let base = slice.trim_end_matches(".slice");
    if base == "-" || base.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let mut acc = String::new();
    for part in base.split('-') {
        if !acc.is_empty() {
            acc.push('-');
        }
        acc.push_str(part);
        out.push('/');
        out.push_str(&acc);
        out.push_str(".slice");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn forms() {
        assert_eq!(resolve(Some("/default/c1"), "c1"), ("/default/c1".into(), false));
        assert_eq!(resolve(Some("k8s/c1"), "c1"), ("/k8s/c1".into(), false));
        assert_eq!(resolve(None, "c1"), ("/rsv2/c1".into(), false));
        assert_eq!(
            resolve(Some("kubepods-besteffort-pod12.slice:cri-containerd:abc"), "abc"),
            ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope".into(), true)
        );
        assert_eq!(resolve(Some("system.slice:docker:abc"), "abc"), ("/system.slice/docker-abc.scope".into(), true));
    }
}
