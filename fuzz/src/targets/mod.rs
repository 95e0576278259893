//! The fuzz targets, one per thing the shim parses from others.

pub mod channel;
pub mod options;
pub mod spec;
pub mod ttrpc;

use crate::Target;

pub const NAMES: &[&str] = &["spec", "ttrpc", "options", "channel"];

/// The target of that name (see [`NAMES`]).
pub fn by_name(name: &str) -> Result<Box<dyn Target>, String> {
    Ok(match name {
        "spec" => Box::new(spec::SpecTarget::new()?),
        "ttrpc" => Box::new(ttrpc::TtrpcTarget::new()?),
        "options" => Box::new(options::OptionsTarget),
        "channel" => Box::new(channel::ChannelTarget::new()?),
        other => return Err(format!("no fuzz target {other:?}: one of {}", NAMES.join(", "))),
    })
}
