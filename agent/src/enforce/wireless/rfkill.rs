//! Wireless radios through rfkill's sysfs class (`/sys/class/rfkill/rfkillN/{type,name,soft,
//! hard}` under the root). Writing `1` to `soft` soft-blocks a radio, the same as
//! `rfkill block` through `/dev/rfkill`; sysfs is enough and a test root can imitate it
//! with plain files. Only radios of type `wlan` are Wi-Fi.

use std::path::{Path, PathBuf};

use crate::host::Host;

pub const DIR: &str = "/sys/class/rfkill";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Radio {
    /// `rfkill0`, ...
    pub id: String,
    /// The radio's `name` (e.g. `phy0`).
    pub name: String,
    pub soft_blocked: bool,
    pub hard_blocked: bool,
    pub dir: PathBuf,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok().map(|s| s.trim().to_owned())
}

/// The host's Wi-Fi radios, by id. No rfkill class (containers, no driver): none.
pub fn wlan_radios(host: &Host) -> std::io::Result<Vec<Radio>> {
    let dir = host.path(DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if read(&path, "type").as_deref() != Some("wlan") {
            continue;
        }
        out.push(Radio {
            id: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            name: read(&path, "name").unwrap_or_default(),
            soft_blocked: read(&path, "soft").as_deref() == Some("1"),
            hard_blocked: read(&path, "hard").as_deref() == Some("1"),
            dir: path,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Soft-blocks `radio` (sysfs attributes are written in place: no temp file and rename).
pub fn soft_block(radio: &Radio) -> std::io::Result<()> {
    std::fs::write(radio.dir.join("soft"), b"1\n")
}
