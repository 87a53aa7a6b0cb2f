//! The documentation stays true and findable: the README is short, starts with the commands
//! that set up, run and test the service, and every link of it and of `docs/` resolves; the API
//! page covers the OpenAPI document, `config/default.toml` names every environment variable, and
//! the curl examples run against a live service.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::helpers::spawn_app;

/// A file of the repository, by its path from the root.
fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `README.md` and every `docs/*.md`, by their paths from the root.
fn markdown_pages() -> Vec<String> {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let mut pages: Vec<String> = std::fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("{}: {e}", docs.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    pages.insert(0, "README.md".into());
    pages
}

/// A page's lines outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lower case, punctuation dropped except `-` and `_`, each space
/// a `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a page's headings; a repeated heading gets `-1`, `-2`, … as on GitHub.
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let base = slug(heading);
        let (mut anchor, mut n) = (base.clone(), 0);
        while !seen.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
    }
    seen
}

/// The targets of a page's inline links and images, leaving out code blocks and code spans.
fn link_targets(text: &str) -> Vec<String> {
    let prose = prose_lines(text).join("\n");
    // A code span may run over a line break, so the spans are cut out of the whole text.
    let outside_code: String = prose.split('`').step_by(2).collect::<Vec<_>>().join(" ");
    let mut targets = Vec::new();
    let mut rest = outside_code.as_str();
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or_default();
        targets.push(target.to_string());
        rest = &after[end..];
    }
    targets
}

#[test]
fn the_readme_is_short_starts_with_the_two_commands_and_every_doc_link_resolves() {
    // Arrange
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = repo_file("README.md");

    // Assert: short, the reference is in docs/.
    let lines = readme.lines().count();
    assert!(
        lines <= 160,
        "README.md has {lines} lines (at most 160): the reference belongs in docs/"
    );

    // Assert: the commands that set up, run and test come first, before any section.
    let first_block = readme.find("\n```").expect("README.md has a code block");
    let first_section = readme.find("\n## ").unwrap_or(readme.len());
    assert!(
        first_block < first_section,
        "README.md's first code block comes after its first section"
    );
    let block: Vec<&str> = readme[first_block..]
        .lines()
        .skip(2)
        .take_while(|line| !line.starts_with("```"))
        .collect();
    for command in ["cargo run --release", "scripts/test.sh"] {
        assert!(
            block.iter().any(|line| line.starts_with(command)),
            "README.md's first code block lacks `{command}`: {block:?}"
        );
    }

    // Assert: every relative link reaches a file, and a heading where it names one.
    let mut broken = Vec::new();
    for page in markdown_pages() {
        let text = repo_file(&page);
        let dir = Path::new(&page).parent().unwrap_or(Path::new(""));
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                PathBuf::from(&page)
            } else {
                dir.join(path)
            };
            if !root.join(&file).is_file() {
                broken.push(format!("{page}: {target}: no file {}", file.display()));
                continue;
            }
            let markdown = file.extension().is_some_and(|ext| ext == "md");
            if let (Some(anchor), true) = (anchor, markdown) {
                let headings = anchors(&repo_file(&file.to_string_lossy()));
                if !headings.contains(anchor) {
                    broken.push(format!("{page}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn github_anchors_drop_punctuation_and_number_repeated_headings() {
    assert_eq!(
        slug(" Run of 2026-11-27 03:02 UTC: `GET /auth/me` under wrk"),
        "run-of-2026-11-27-0302-utc-get-authme-under-wrk"
    );
    assert_eq!(
        slug(" Taking over the seed's MongoDB database"),
        "taking-over-the-seeds-mongodb-database"
    );
    let page = "# A\n## Notes\n```\n# not a heading\n```\n## Notes\n";
    let expected: HashSet<String> = ["a", "notes", "notes-1"].map(String::from).into();
    assert_eq!(anchors(page), expected);
    assert_eq!(
        link_targets("[a](b.md#c) `[x](not-a-link)` ![img](d.png \"title\")"),
        ["b.md#c", "d.png"]
    );
}

#[actix_web::test]
async fn every_operation_of_the_openapi_document_is_in_the_api_page() {
    let app = spawn_app().await;
    let doc: Value = app.get_json("/openapi.json").await;
    let api = repo_file("docs/api.md");

    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("an operation map").keys() {
            let entry = format!("`{} {}", method.to_uppercase(), path);
            assert!(api.contains(&entry), "docs/api.md lacks {entry}`");
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
fn every_environment_variable_is_in_the_default_configuration_file() {
    let defaults = repo_file("config/default.toml");
    let words: HashSet<&str> = defaults
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    for (var, _) in cs_user_management::configuration::ENV_VARS {
        assert!(words.contains(var), "config/default.toml lacks {var}");
    }
}

#[actix_web::test]
async fn the_curl_examples_of_the_docs_run_against_a_live_service() {
    let app = spawn_app().await;
    let mut blocks = Vec::new();
    for page in markdown_pages() {
        let text = repo_file(&page);
        for rest in text.split("<!-- tested: -->\n```bash\n").skip(1) {
            let block = rest.split("\n```").next().unwrap_or_default();
            blocks.push((page.clone(), block.to_string()));
        }
    }
    assert!(!blocks.is_empty(), "no tested examples found");

    for (page, block) in blocks {
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
            "example of {page} failed:\n{script}\nstdout: {}\nstderr: {}",
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
