//! The Helm chart rendered and linted by the real Helm engine and every manifest checked
//! against the Kubernetes 1.30 schemas: `helm/tests/test_chart.py` (needs
//! `python3 -m pip install helm-python-sdk kubernetes-validate`).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, ensure};

#[test]
fn the_helm_chart_renders_lints_and_validates() -> Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("helm/tests/test_chart.py"))
        .current_dir(&root)
        .output()
        .context("python3 is needed: python3 -m pip install helm-python-sdk kubernetes-validate")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "helm/tests/test_chart.py failed ({}); it needs `python3 -m pip install \
         helm-python-sdk kubernetes-validate`:\n{stdout}{stderr}",
        out.status
    );
    ensure!(stdout.contains("checks passed"), "unexpected output:\n{stdout}{stderr}");
    Ok(())
}
