//! The policy pack validates; a broken file gets every error with its position.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, ensure};
use bulwark_integration_tests::cluster::workspace_bin;

fn validate(paths: &[PathBuf]) -> Result<(bool, String, String)> {
    let out = Command::new(workspace_bin("bulwarkctl")?)
        .args(["policy", "validate"])
        .args(paths)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn the_radiology_pack_validates() -> Result<()> {
    let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let (ok, out, err) = validate(&[pack])?;
    ensure!(ok && out.is_empty(), "{out}{err}");
    ensure!(err.trim() == "25 documents in 6 files: 0 errors, 0 warnings", "{err}");
    Ok(())
}

#[test]
fn a_broken_file_gets_every_error_with_its_position() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let broken = dir.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: bulwark.io/v1
kind: Policy
metadata: {name: imaging-oops}
spec:
  selector: {role: modality}
  firewall:
    rules:
      - {action: allow, direction: outbound, peers: [pacs], services: [dicomm]}
      - {action: allow, direction: sideways}
  passwords: {profile: cis-debian12, lockoutAttempts: 0}
",
    )?;
    let (ok, out, err) =
        validate(&[pack.join("services.yaml"), pack.join("segments.yaml"), broken.clone()])?;
    ensure!(!ok, "a broken file validated");
    let b = broken.display();
    let lines: Vec<&str> = out.lines().collect();
    ensure!(
        lines
            == [
                format!(
                    "{b}:9:36: spec.firewall.rules[1].direction: \"sideways\" is not one of inbound, outbound"
                ),
                format!(
                    "{b}:10:55: spec.passwords.lockoutAttempts: 0 is not a number of attempts (1-100)"
                ),
            ],
        "{out}"
    );
    ensure!(err.trim() == "bulwarkctl: 19 documents in 3 files: 2 errors, 0 warnings", "{err}");
    Ok(())
}
