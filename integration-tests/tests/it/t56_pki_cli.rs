//! `bulwarkctl pki`, `token`, `admin` and `audit` as an operator runs them: a CA made by
//! `pki init` runs a real controller, an admin issued by `pki issue-admin` gets its role,
//! and the audit log shows both what was done and what was refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Result, ensure};
use bulwark_controller::tls::TlsFiles;
use bulwark_integration_tests::cluster::{free_port, workspace_bin};
use bulwark_integration_tests::ctl::bulwarkctl;
use bulwark_integration_tests::eventually;

struct Ctl {
    dir: std::path::PathBuf,
    endpoint: String,
}

impl Ctl {
    /// Runs `bulwarkctl ARGS` as admin `who` (files from `pki init` / `issue-admin`).
    async fn run(&self, who: &str, args: &[&str]) -> Result<(bool, String, String)> {
        let tls = TlsFiles {
            ca: self.dir.join("ca.pem"),
            cert: self.dir.join(format!("admin-{who}.pem")),
            key: self.dir.join(format!("admin-{who}-key.pem")),
        };
        let out = bulwarkctl(&self.endpoint, &tls, args).await?;
        Ok((out.ok, out.stdout, out.stderr))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_init_runs_a_cluster_and_roles_and_audit_work_from_the_cli() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki = tmp.path().join("pki");
    let ctl = Ctl { dir: pki.clone(), endpoint: format!("127.0.0.1:{}", free_port()?) };
    let bin = workspace_bin("bulwarkctl")?;
    let init = |force: bool| {
        let mut c = std::process::Command::new(&bin);
        c.args(["pki", "init", "--out"]).arg(&pki);
        c.args([
            "--controller-names",
            "ctl-1.radiology.lan,ctl-2.radiology.lan",
            "--controller-ips",
            "127.0.0.1",
        ]);
        c.args(["--admin", "ops"]);
        if force {
            c.arg("--force");
        }
        c.output()
    };
    let out = init(false)?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["ca.pem", "controller-1.pem", "controller-2.pem", "admin-ops.pem"] {
        ensure!(pki.join(f).exists(), "{f} missing");
    }
    for f in ["ca-key.pem", "controller-1-key.pem", "controller-2-key.pem", "admin-ops-key.pem"] {
        let mode = std::fs::metadata(pki.join(f))?.permissions().mode() & 0o777;
        ensure!(mode == 0o600, "{f} has mode {mode:o}");
    }
    // A second init refuses to replace the CA.
    let ca_before = std::fs::read(pki.join("ca.pem"))?;
    let out = init(false)?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "a second init succeeded");
    ensure!(
        err.trim()
            == format!(
                "bulwarkctl: {} already exists; refusing to overwrite a CA (use --force to replace it)",
                pki.join("ca.pem").display()
            ),
        "{err}"
    );
    ensure!(std::fs::read(pki.join("ca.pem"))? == ca_before, "the CA changed");
    let out = std::process::Command::new(&bin)
        .args(["pki", "issue-admin", "vera", "--role", "viewer", "--dir"])
        .arg(&pki)
        .output()?;
    ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A controller from those files, signing agent certificates with the CA key.
    let mut node = tokio::process::Command::new(workspace_bin("bulwark-controller")?);
    node.args(["--node-id", "1", "--listen", &ctl.endpoint, "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg("--tls-ca")
        .arg(pki.join("ca.pem"))
        .arg("--tls-cert")
        .arg(pki.join("controller-1.pem"))
        .arg("--tls-key")
        .arg(pki.join("controller-1-key.pem"))
        .arg("--ca-key")
        .arg(pki.join("ca-key.pem"))
        .env("BULWARK_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let mut node = node.spawn()?;
    eventually("the controller to answer", Duration::from_secs(10), || async {
        let (ok, _, err) = ctl.run("ops", &["--timeout", "0s", "cluster", "status"]).await?;
        ensure!(ok, "{err}");
        Ok(())
    })
    .await?;
    let (ok, _, err) = ctl.run("ops", &["cluster", "init"]).await?;
    ensure!(ok, "{err}");

    let (ok, token, err) = ctl
        .run(
            "ops",
            &[
                "token",
                "create",
                "--labels",
                "role=modality,site=north",
                "--uses",
                "3",
                "--ttl",
                "2h",
            ],
        )
        .await?;
    ensure!(ok && token.trim().starts_with("bwt_"), "{token}{err}");
    ensure!(
        err.contains("for 3 enrollment(s)") && err.contains("labels role=modality,site=north"),
        "{err}"
    );
    let (ok, list, err) = ctl.run("vera", &["token", "list"]).await?;
    ensure!(
        ok && list.contains("3/3") && list.contains("valid") && !list.contains(token.trim()),
        "{list}{err}"
    );
    let (ok, _, err) = ctl.run("vera", &["token", "create"]).await?;
    ensure!(!ok, "a viewer created a token");
    ensure!(
        err.trim()
            == format!(
                "bulwarkctl: {}: admin vera has role viewer; /bulwark.v1.SecurityService/CreateToken needs operator or higher",
                ctl.endpoint
            ),
        "{err}"
    );
    // Promote vera through the cluster; her certificate stays the same.
    let (ok, out, err) = ctl.run("ops", &["admin", "set-role", "vera", "operator"]).await?;
    ensure!(ok && out.trim() == "admin/vera has role operator", "{out}{err}");
    let (ok, _, err) = ctl.run("vera", &["token", "create"]).await?;
    ensure!(ok, "{err}");

    let (ok, audit, err) = ctl.run("vera", &["audit", "--since", "1h"]).await?;
    ensure!(ok, "{err}");
    let lines: Vec<&str> = audit.lines().collect();
    let created = lines.iter().filter(|l| l.contains("CreateToken") && l.contains(" Ok ")).count();
    ensure!(created == 2, "{audit}");
    ensure!(
        lines.iter().any(|l| l.contains("admin/vera") && l.contains("PermissionDenied")),
        "{audit}"
    );
    ensure!(
        lines.iter().any(|l| l.contains("admin/ops")
            && l.contains("SetAdminRole")
            && l.contains("admin vera -> operator")),
        "{audit}"
    );
    let (ok, only, _) =
        ctl.run("ops", &["audit", "--who", "vera", "--method", "CreateToken"]).await?;
    ensure!(
        ok && only.lines().count() == 2 && only.lines().all(|l| l.contains("admin/vera")),
        "{only}"
    );
    node.kill().await?;
    Ok(())
}
