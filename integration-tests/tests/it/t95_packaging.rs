//! The Debian packages as `scripts/build-debs` makes them: what `dpkg-deb` sees in each
//! (binaries, units, configuration, policy pack, docs, dependencies, conffiles, maintainer
//! scripts), systemd's own verdict on the shipped units, and the shipped configuration
//! files read by the real configuration loader and flag parser.
//!
//! Needs cargo-deb (`cargo install cargo-deb --locked`); with `BULWARK_SKIP_DEB=1` the
//! package build is skipped when it is missing (the configuration checks still run).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use bulwark_controller::config::ControllerArgs;
use clap::Parser;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo_deb_present() -> bool {
    Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// `target/debian/NAME_VERSION-1_ARCH.deb`.
fn deb(name: &str) -> Result<PathBuf> {
    let prefix = format!("{name}_{}-", env!("CARGO_PKG_VERSION"));
    let dir = root().join("target/debian");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .collect();
    found.sort();
    found.pop().with_context(|| format!("no {prefix}*.deb in {}", dir.display()))
}

fn contains_all(listing: &str, paths: &[&str], what: &str) -> Result<()> {
    for p in paths {
        ensure!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" ./{p}")) || l.contains(&format!(" ./{p} "))),
            "{what}: {p} is missing; the package holds:\n{listing}"
        );
    }
    Ok(())
}

/// The unit from the package, checked by `systemd-analyze verify` (unknown keys, bad
/// values) with ExecStart pointing at the packaged binary.
fn verify_unit(extracted: &Path, unit: &str) -> Result<()> {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("systemd-analyze is not installed; {unit} not verified by systemd");
        return Ok(());
    }
    let shipped = ["lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| extracted.join(d).join(unit))
        .find(|p| p.exists())
        .with_context(|| format!("{unit} not in the package"))?;
    let text = std::fs::read_to_string(&shipped)?;
    let bin = extracted.join("usr/bin");
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join(unit);
    std::fs::write(&copy, text.replace("/usr/bin/", &format!("{}/", bin.display())))?;
    let out = Command::new(analyze).args(["verify", "--man=no"]).arg(&copy).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {unit}:\n{stderr}"
    );
    Ok(())
}

#[test]
fn the_shipped_controller_toml_is_read_by_the_real_loader() -> Result<()> {
    let file = root().join("packaging/controller.toml");
    let args = ControllerArgs::try_parse_from([
        "bulwark-controller",
        "--config",
        file.to_str().context("path")?,
        "--node-id",
        "1",
    ])?;
    let resolved = args.resolve().map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(resolved.listen == "0.0.0.0:7000", "listen {}", resolved.listen);
    ensure!(resolved.http_listen.as_deref() == Some("127.0.0.1:7080"));
    ensure!(resolved.node.data_dir == Path::new("/var/lib/bulwark-controller"));
    // The unit's StateDirectory= is what makes the data dir exist and writable.
    let unit =
        std::fs::read_to_string(root().join("packaging/systemd/bulwark-controller.service"))?;
    ensure!(unit.contains("StateDirectory=bulwark-controller\n"), "unit and data_dir disagree");
    Ok(())
}

#[test]
fn debian_packages_hold_binaries_units_config_policies_and_dependencies() -> Result<()> {
    if !cargo_deb_present() {
        if std::env::var("BULWARK_SKIP_DEB").is_ok_and(|v| v == "1") {
            eprintln!("cargo-deb is missing and BULWARK_SKIP_DEB=1: Debian packages not built");
            return Ok(());
        }
        bail!(
            "cargo-deb is missing: install it with `cargo install cargo-deb --locked` \
             (or set BULWARK_SKIP_DEB=1 to skip building the Debian packages)"
        );
    }
    // The debug binaries the suite already built: the packages' layout is what is tested.
    run(Command::new(root().join("scripts/build-debs")).env("PROFILE", "dev").current_dir(root()))?;

    let controller = deb("bulwark-controller")?;
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&controller))?;
    let mut want = vec![
        "usr/bin/bulwark-controller",
        "usr/bin/bulwarkctl",
        "usr/lib/systemd/system/bulwark-controller.service",
        "etc/bulwark/controller.toml",
        "usr/share/doc/bulwark-controller/operations.md",
        "usr/share/doc/bulwark-controller/README.md",
        "usr/share/doc/bulwark-controller/policy-reference.md",
    ];
    let policies: Vec<String> = std::fs::read_dir(root().join("policies"))?
        .filter_map(|e| e.ok())
        .map(|e| format!("usr/share/bulwark/policies/{}", e.file_name().to_string_lossy()))
        .collect();
    ensure!(policies.len() >= 6, "the policy pack has {} files", policies.len());
    want.extend(policies.iter().map(String::as_str));
    contains_all(&listing, &want, "bulwark-controller")?;
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&controller))?;
    ensure!(info.contains("Package: bulwark-controller"), "{info}");
    let depends = info.lines().find(|l| l.trim_start().starts_with("Depends:")).unwrap_or("");
    ensure!(depends.contains("adduser"), "bulwark-controller Depends: {depends}");
    for script in ["postinst", "postrm", "prerm", "conffiles"] {
        ensure!(info.contains(script), "bulwark-controller has no {script}:\n{info}");
    }

    let agent = deb("bulwark-agent")?;
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&agent))?;
    contains_all(
        &listing,
        &[
            "usr/bin/bulwark-agent",
            "usr/lib/systemd/system/bulwark-agent.service",
            "etc/default/bulwark-agent",
            "usr/share/doc/bulwark-agent/operations.md",
        ],
        "bulwark-agent",
    )?;
    ensure!(!listing.contains("bulwarkctl"), "the agent package carries controller binaries");
    let info = run(Command::new("dpkg-deb").arg("-I").arg(&agent))?;
    let depends = info.lines().find(|l| l.trim_start().starts_with("Depends:")).unwrap_or("");
    for dep in ["nftables", "iproute2"] {
        ensure!(depends.contains(dep), "bulwark-agent Depends lacks {dep}: {depends}");
    }

    // Extract both and check what they ship with the real tools.
    let tree = tempfile::tempdir()?;
    for d in [&controller, &agent] {
        run(Command::new("dpkg-deb").arg("-x").arg(d).arg(tree.path()))?;
    }
    verify_unit(tree.path(), "bulwark-controller.service")?;
    verify_unit(tree.path(), "bulwark-agent.service")?;
    for (d, conffile) in
        [(&controller, "/etc/bulwark/controller.toml"), (&agent, "/etc/default/bulwark-agent")]
    {
        let control = tempfile::tempdir()?;
        run(Command::new("dpkg-deb").arg("-e").arg(d).arg(control.path()))?;
        let list = std::fs::read_to_string(control.path().join("conffiles")).unwrap_or_default();
        ensure!(list.lines().any(|l| l == conffile), "{}: conffiles {list:?}", d.display());
    }

    // Every BULWARK_* variable in the shipped agent.env is one the packaged agent reads.
    let bin = tree.path().join("usr/bin/bulwark-agent");
    let help =
        run(Command::new(&bin).arg("--help"))? + &run(Command::new(&bin).args(["run", "--help"]))?;
    let env = std::fs::read_to_string(tree.path().join("etc/default/bulwark-agent"))?;
    for line in env.lines() {
        let line = line.trim_start_matches('#');
        let Some((name, _)) = line.split_once('=') else { continue };
        if !name.starts_with("BULWARK_") || name.contains(' ') {
            continue;
        }
        let known = help.contains(&format!("env: {name}="))
            || ["BULWARK_LOG", "BULWARK_LOG_FORMAT"].contains(&name);
        ensure!(known, "agent.env sets {name}, which bulwark-agent does not read");
    }
    Ok(())
}
