//! Names the commit the binary is built from, for `csum_build_info{commit}`: `CSUM_COMMIT` when
//! set (the image build passes it, having no `.git`), else `git rev-parse`, else `unknown`.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CSUM_COMMIT");
    for watched in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
    let from_git = || {
        let out = Command::new("git")
            .args(["rev-parse", "--short=12", "HEAD"])
            .output()
            .ok()?;
        let commit = String::from_utf8(out.stdout).ok()?;
        Some(commit.trim().to_string()).filter(|c| out.status.success() && !c.is_empty())
    };
    let commit = std::env::var("CSUM_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=CSUM_COMMIT={commit}");
}
