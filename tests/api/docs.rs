//! The README stays true: its API table covers the OpenAPI document, its configuration table
//! covers every environment variable, and its curl examples run against a live service.
use serde_json::Value;

use crate::helpers::spawn_app;

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README")
}

#[actix_web::test]
async fn every_operation_of_the_openapi_document_is_in_the_readme_and_back() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    let readme = readme();

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            let entry = format!("`{} {}", method.to_uppercase(), path);
            assert!(readme.contains(&entry), "README lacks {entry}`");
            documented.push(entry);
        }
    }
    assert!(documented.len() >= 15, "{documented:?}");
    // Every bearer-protected operation declares the security scheme.
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert_eq!(
        doc["paths"]["/auth/me"]["get"]["security"][0]["bearer"],
        serde_json::json!([])
    );
}

#[test]
fn every_environment_variable_is_in_the_configuration_table() {
    let readme = readme();
    for (var, _) in cs_user_management::configuration::ENV_VARS {
        assert!(readme.contains(&format!("`{var}`")), "README lacks `{var}`");
    }
}

#[actix_web::test]
async fn the_readme_curl_examples_run_against_a_live_service() {
    let app = spawn_app().await;
    let readme = readme();
    let blocks: Vec<&str> = readme
        .split("<!-- tested: -->\n```bash\n")
        .skip(1)
        .map(|rest| rest.split("\n```").next().unwrap())
        .collect();
    assert!(!blocks.is_empty(), "no tested examples found");

    for block in blocks {
        let script = block.replace(
            "BASE=http://localhost:8080",
            &format!("BASE={}", app.address),
        );
        // Async: a blocking wait would stall this test's runtime, which the service shares.
        let out = tokio::process::Command::new("timeout")
            .args(["60", "bash", "-euo", "pipefail", "-c", &script])
            .output()
            .await
            .expect("bash runs");
        assert!(
            out.status.success(),
            "example failed:\n{script}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a tool of the Python environment the tests use (`TEST_PYTHON`'s virtualenv, where
/// `scripts/lib.sh` installs it), bounded by a timeout; its output when it fails.
fn python_tool(tool: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let python = crate::compat::python();
    let bin = std::path::Path::new(&python)
        .parent()
        .expect("TEST_PYTHON is in a bin directory")
        .to_path_buf();
    let program = if tool == "python" {
        python.clone()
    } else {
        bin.join(tool).display().to_string()
    };
    // The generator formats its output with the environment's ruff.
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("timeout")
        .arg("300")
        .arg(&program)
        .args(args)
        .env("PATH", path)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/lib.sh installs it): {e}"))
}

/// The OpenAPI document is valid (`openapi-spec-validator`), its operation ids are unique and
/// descriptive, the error answers declare their headers, and a Python client generated from it
/// by a stock generator (`openapi-python-client`) runs register, sign in, me and sign out.
#[actix_web::test]
async fn the_openapi_document_validates_and_a_generated_client_runs_the_auth_flow() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("an operation map") {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(ids.insert(id.to_string()), "{method} {path}: {id} again");
            for (status, header) in [
                ("401", "WWW-Authenticate"),
                ("429", "Retry-After"),
                ("503", "Retry-After"),
            ] {
                if let Some(response) = operation["responses"].get(status) {
                    assert!(
                        response["headers"].get(header).is_some(),
                        "{method} {path} {status} declares {header}"
                    );
                }
            }
        }
    }
    for id in ["registerUser", "signIn", "getCurrentUser", "listSessions"] {
        assert!(ids.contains(id), "{ids:?}");
    }
    let dir = std::env::temp_dir().join(format!("openapi-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a directory for the document");
    let document = dir.join("openapi.json");
    std::fs::write(&document, doc.to_string()).expect("the document written");
    let (document, client) = (
        document.display().to_string(),
        dir.join("cs_client").display().to_string(),
    );
    let flow = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openapi/client_flow.py");
    let dir_name = dir.display().to_string();
    let base = app.address.clone();

    let (validated, generated, ran) = tokio::task::spawn_blocking(move || {
        let validated = python_tool("openapi-spec-validator", &[&document], &[]);
        let generated = python_tool(
            "openapi-python-client",
            &[
                "generate",
                "--path",
                &document,
                "--meta",
                "none",
                "--output-path",
                &client,
            ],
            &[],
        );
        let ran = python_tool("python", &[flow, &base], &[("PYTHONPATH", &dir_name)]);
        (validated, generated, ran)
    })
    .await
    .expect("the tools ran");

    let said = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(validated.status.success(), "{}", said(&validated));
    assert!(generated.status.success(), "{}", said(&generated));
    assert!(ran.status.success(), "{}", said(&ran));
    let _ = std::fs::remove_dir_all(&dir);
}
