//! Turning `linux.cgroupsPath` into a cgroupfs path.
//!
//! The path comes from the spec, which is untrusted: whatever it says, the
//! result names a cgroup strictly below the root of every hierarchy.

/// A cgroupsPath that cannot name a container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("linux.cgroupsPath {path:?}: {problem}")]
pub struct PathError {
    pub path: String,
    pub problem: String,
}

/// The resolved path, and whether it came from the systemd form.
pub type Resolved = (String, bool);

/// Resolves a cgroupsPath to a path below the cgroup root.
///
/// - absolute (`/default/ID`, what ctr sends), or relative: below the root,
///   cleaned as runc's `utils.CleanPath("/" + path)` does, so `..` stops at
///   the root of the hierarchy instead of climbing out of it (a raw join
///   turned `/../../x` into a directory at the host's `/`);
/// - systemd form `slice:prefix:name`: the path systemd would create,
///   `/a.slice/a-b.slice/prefix-name.scope`, as runc does when it expands a
///   slice: where the systemd driver ([`crate::systemd`]) finds its unit's
///   cgroup, and what the cgroupfs driver uses on a host that systemd
///   does not run (the caller logs that it did);
/// - empty: `/rsv2/ID`.
///
/// A path that cleans to the root itself is refused: the container would
/// share the host's root cgroup, and Delete kills what its cgroup holds.
pub fn resolve(cgroups_path: Option<&str>, id: &str) -> Result<Resolved, PathError> {
    let Some(p) = cgroups_path.filter(|p| !p.is_empty()) else {
        // The id is checked by the shim (containerd's identifier rules);
        // cleaned all the same, it stays below /rsv2.
        return Ok((format!("/rsv2{}", clean_rooted(id)), false));
    };
    let err = |problem: &str| PathError { path: p.to_string(), problem: problem.to_string() };
    if p.contains('\0') {
        return Err(err("contains a NUL byte"));
    }
    if let Some(names) = systemd_names(p)? {
        let mut path = expand_slice(&names.slice).map_err(|e| err(&e))?;
        path.push('/');
        path.push_str(&names.unit);
        return not_root(p, (clean_rooted(&path), true));
    }
    not_root(p, (clean_rooted(p), false))
}

/// The systemd units a `slice:prefix:name` cgroupsPath names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdNames {
    /// The parent slice (`system.slice` when the path leaves it empty).
    pub slice: String,
    /// The container's own unit: `prefix-name.scope`, or `name` when it is
    /// a slice.
    pub unit: String,
}

/// Parses the systemd form of a cgroupsPath; None for a plain path.
pub fn systemd_names(p: &str) -> Result<Option<SystemdNames>, PathError> {
    let err = |problem: &str| PathError { path: p.to_string(), problem: problem.to_string() };
    let Some((slice, prefix, name)) = systemd_form(p) else { return Ok(None) };
    // systemd unit names never hold a '/' (systemd.unit(5)): one here
    // would be a path, not a name.
    if [slice, prefix, name].iter().any(|s| s.contains('/')) {
        return Err(err("a systemd slice:prefix:name path may not contain '/'"));
    }
    if name.is_empty() {
        return Err(err("the systemd unit name (after the second ':') is empty"));
    }
    let slice = if slice.is_empty() { "system.slice" } else { slice };
    expand_slice(slice).map_err(|e| err(&e))?;
    let unit = if name.ends_with(".slice") {
        name.to_string()
    } else if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    };
    Ok(Some(SystemdNames { slice: slice.to_string(), unit }))
}

fn not_root(original: &str, r: Resolved) -> Result<Resolved, PathError> {
    if r.0 == "/" {
        return Err(PathError { path: original.to_string(), problem: "names the root of the cgroup hierarchy, which holds the host's own processes".into() });
    }
    Ok(r)
}

/// Lexical cleaning of `p` as if rooted at `/` (Go's `filepath.Clean("/" +
/// p)`): empty and `.` parts go, and `..` removes the part before it but
/// never goes above the root.
pub fn clean_rooted(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    format!("/{}", parts.join("/"))
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

/// `a-b-c.slice` lives at `/a.slice/a-b.slice/a-b-c.slice` (systemd.slice(5));
/// `-.slice` is the root slice. Like systemd (and runc's ExpandSlice), a
/// name with an empty dash-separated part is refused.
fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice name (it must end in .slice)"));
    };
    if base == "-" {
        return Ok(String::new());
    }
    if base.is_empty() || base.split('-').any(str::is_empty) {
        return Err(format!("{slice:?} is not a valid slice name"));
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(resolve(Some("/default/c1"), "c1"), Ok(("/default/c1".into(), false)));
        assert_eq!(resolve(Some("k8s/c1"), "c1"), Ok(("/k8s/c1".into(), false)));
        assert_eq!(resolve(None, "c1"), Ok(("/rsv2/c1".into(), false)));
        assert_eq!(
            resolve(Some("kubepods-besteffort-pod12.slice:cri-containerd:abc"), "abc"),
            Ok(("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-abc.scope".into(), true))
        );
        assert_eq!(resolve(Some("system.slice:docker:abc"), "abc"), Ok(("/system.slice/docker-abc.scope".into(), true)));
        assert_eq!(resolve(Some(":docker:abc"), "abc"), Ok(("/system.slice/docker-abc.scope".into(), true)));
        assert_eq!(resolve(Some("-.slice:p:abc"), "abc"), Ok(("/p-abc.scope".into(), true)));
    }

    #[test]
    fn dotdot_never_leaves_the_hierarchy() {
        assert_eq!(resolve(Some("/../../../../x"), "c"), Ok(("/x".into(), false)));
        assert_eq!(resolve(Some("../x/./y//z"), "c"), Ok(("/x/y/z".into(), false)));
        assert_eq!(resolve(Some("/a/b/../../../c"), "c"), Ok(("/c".into(), false)));
        assert_eq!(clean_rooted("/a/../.."), "/");
        assert_eq!(resolve(None, "../../x"), Ok(("/rsv2/x".into(), false)));
    }

    #[test]
    fn the_root_and_bad_systemd_names_are_refused() {
        for p in ["/", "/..", "..", "/./", "a/.."] {
            let e = resolve(Some(p), "c").unwrap_err();
            assert!(e.to_string().contains("root of the cgroup hierarchy"), "{p}: {e}");
        }
        for p in ["a/b.slice:p:n", "x.slice:p/q:n", "x.slice:p:n/../../m", "notaslice:p:n", "a--b.slice:p:n", "x.slice:p:", "\0"] {
            assert!(resolve(Some(p), "c").is_err(), "{p:?} was accepted");
        }
    }
}
