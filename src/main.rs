//! The service binary: telemetry, configuration, start, wait.
use cs_user_management::configuration::Settings;
use cs_user_management::startup::Application;
use cs_user_management::telemetry;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let app = match Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("{e}");
            return std::process::ExitCode::from(1);
        }
    };
    tracing::info!(port = app.port(), "listening");
    match app.run_until_stopped().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("server error: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
