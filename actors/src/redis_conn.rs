//! The one Redis connection the token and session actors share: a `ConnectionManager`, which
//! multiplexes commands and reconnects by itself with backoff after Redis restarts.
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

pub use redis::aio::ConnectionManager as RedisConnection;

/// Connects lazily: the service starts while Redis is down and says so in `/health/ready`.
/// `timeout` bounds both connecting and each command, so a request gets 503, not a hang.
pub fn connect(
    host: &str,
    port: u16,
    db: i64,
    password: Option<&str>,
    timeout: Duration,
) -> Result<ConnectionManager, String> {
    let mut info = redis::RedisConnectionInfo::default().set_db(db);
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        info = info.set_password(password);
    }
    let addr = redis::ConnectionAddr::Tcp(host.to_string(), port);
    let connection = redis::IntoConnectionInfo::into_connection_info(addr)
        .map_err(|e| format!("REDIS_HOST/REDIS_PORT: {e}"))?
        .set_redis_settings(info);
    let client = redis::Client::open(connection).map_err(|e| format!("Redis settings: {e}"))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| format!("Redis settings: {e}"))
}
