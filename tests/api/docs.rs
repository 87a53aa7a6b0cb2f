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
