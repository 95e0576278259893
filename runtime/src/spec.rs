//! Loading and checking an OCI bundle before anything is forked.
//!
//! Every check here turns a bad bundle into an error that names the problem,
//! at Create time, in the shim, where containerd shows it to the user.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config.json at {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config.json at {path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("rootfs {path} of the bundle does not exist or is not a directory")]
    MissingRootfs { path: PathBuf },
}

/// A parsed bundle: the spec and the absolute rootfs path.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub spec: Spec,
    pub rootfs: PathBuf,
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle, SpecError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| SpecError::Read { path: path.clone(), source })?;
        let spec: Spec = parse(&text).map_err(|e| SpecError::Parse { path: path.clone(), message: e.to_string() })?;
        let rootfs = validate(&path, dir, &spec)?;
        Ok(Bundle { dir: dir.to_path_buf(), spec, rootfs })
    }
}

/// A config.json that does not parse: the field it failed in (empty for
/// the document itself) and serde_json's error.
#[derive(Debug)]
pub struct ParseError {
    pub field: String,
    pub error: serde_json::Error,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}", self.error)
        } else {
            write!(f, "{}: {}", self.field, self.error)
        }
    }
}

/// config.json into the spec model; an error names the field it is in
/// (`process.capabilities.bounding[1]: unknown variant ...`), or the line
/// and column where the JSON itself is broken.
pub fn parse(text: &str) -> Result<Spec, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let spec: Spec = serde_path_to_error::deserialize(&mut de).map_err(|e| ParseError { field: e.path().to_string(), error: e.into_inner() })?;
    de.end().map_err(|error| ParseError { field: String::new(), error })?;
    Ok(spec)
}

/// The rootfs, joined onto the bundle, and every rule of
/// [`crate::validate`].
fn validate(path: &Path, dir: &Path, spec: &Spec) -> Result<PathBuf, SpecError> {
    let invalid = |problem: String| SpecError::Invalid { path: path.to_path_buf(), problem };
    let root = spec.root().as_ref().ok_or_else(|| invalid("root is missing".into()))?;
    let rootfs = if root.path().is_absolute() { root.path().clone() } else { dir.join(root.path()) };
    if !rootfs.is_dir() {
        return Err(SpecError::MissingRootfs { path: rootfs });
    }
    crate::validate::check(spec, &rootfs).map_err(|e| invalid(e.to_string()))?;
    Ok(rootfs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle_with(config: &str) -> (tempfile::TempDir, Result<Bundle, SpecError>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let r = Bundle::load(dir.path());
        (dir, r)
    }

    #[test]
    fn rejects_malformed_json_with_path() {
        let (_d, r) = bundle_with("{ not json");
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("invalid config.json"), "{msg}");
        assert!(msg.contains("config.json"), "{msg}");
    }

    #[test]
    fn a_field_that_does_not_parse_is_named() {
        let (_d, r) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["/bin/true"],"user":{"uid":0,"gid":0},"capabilities":{"bounding":["CAP_CHOWN","CAP_NOPE"]}}}"#);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("process.capabilities.bounding[1]") && msg.contains("CAP_NOPE"), "{msg}");
        let (_d, r) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["/bin/true"],"user":{"uid":0,"gid":0}},"linux":{"namespaces":[{"type":"mount"},{"type":"nosuchns"}]}}"#);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("linux.namespaces[1].type"), "{msg}");
        let (_d, r) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}} trailing"#);
        assert!(r.unwrap_err().to_string().contains("trailing"));
    }

    #[test]
    fn rejects_empty_args() {
        let (_d, r) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}}"#);
        assert!(r.unwrap_err().to_string().contains("process.args"));
    }

    #[test]
    fn rejects_missing_rootfs() {
        let (_d, r) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"nope"},"process":{"cwd":"/","args":["/bin/true"],"user":{"uid":0,"gid":0}}}"#);
        let msg = r.unwrap_err().to_string();
        assert!(msg.contains("nope") && msg.contains("rootfs"), "{msg}");
    }

    #[test]
    fn accepts_minimal_bundle() {
        let (d, r) = bundle_with(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"process":{"cwd":"/","args":["/bin/true"],"user":{"uid":0,"gid":0}}}"#);
        assert_eq!(r.unwrap().rootfs, d.path().join("rootfs"));
    }
}
