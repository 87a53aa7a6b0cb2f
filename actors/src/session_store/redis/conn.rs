//! The Redis connections of the token and session actors: on one primary a
//! `ConnectionManager` (multiplexed, reconnecting by itself with backoff after Redis restarts;
//! each HTTP worker's TokenActor opens its own, see [`RedisConnection::for_this_thread`]),
//! on a Redis Cluster (`REDIS_CLUSTER_NODES`) the driver's cluster connection, which routes each
//! command and script by its key's slot and follows the cluster's topology. Both connect lazily:
//! the service starts while Redis is down and says so in `/health/ready`.
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, RedisFuture, RedisResult, Value};
use tokio::sync::OnceCell;

/// A connection to one Redis primary or to a Redis Cluster.
#[derive(Clone)]
pub enum RedisConnection {
    Single(Single),
    Cluster(Arc<LazyCluster>),
}

/// A connection to one primary, and what opens another like it.
#[derive(Clone)]
pub struct Single {
    manager: ConnectionManager,
    source: Arc<(redis::Client, ConnectionManagerConfig)>,
}

impl Single {
    fn open(source: Arc<(redis::Client, ConnectionManagerConfig)>) -> RedisResult<Self> {
        let (client, config) = &*source;
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self { manager, source })
    }
}

/// A cluster connection made on first use (and again after a failed attempt).
pub struct LazyCluster {
    client: ClusterClient,
    connection: OnceCell<ClusterConnection>,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// `timeout` bounds both connecting and each command, so a request gets 503, not a hang.
pub fn connect(
    host: &str,
    port: u16,
    db: i64,
    password: Option<&str>,
    timeout: Duration,
) -> Result<RedisConnection, String> {
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
    Single::open(Arc::new((client, config)))
        .map(RedisConnection::Single)
        .map_err(|e| format!("Redis settings: {e}"))
}

/// A Redis Cluster reached through any of `nodes` (`host:port`); the rest of the topology is
/// discovered. Cluster mode has one database (0).
pub fn connect_cluster(
    nodes: &[(String, u16)],
    password: Option<&str>,
    timeout: Duration,
) -> Result<RedisConnection, String> {
    let addresses = nodes
        .iter()
        .map(|(host, port)| redis::ConnectionAddr::Tcp(host.clone(), *port));
    // A command meeting a failover (its primary gone, the cluster down until a replica takes
    // over) is tried again every 20–250 ms, so it follows the promoted replica as soon as the
    // cluster names it, all within `timeout`; then it fails (503).
    let mut builder = ClusterClient::builder(addresses)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .overall_response_timeout(Some(timeout))
        .retries(16)
        .min_retry_wait(20)
        .max_retry_wait(250);
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        builder = builder.password(password);
    }
    let client = builder
        .build()
        .map_err(|e| format!("REDIS_CLUSTER_NODES: {e}"))?;
    Ok(RedisConnection::Cluster(Arc::new(LazyCluster {
        client,
        connection: OnceCell::new(),
    })))
}

impl RedisConnection {
    /// A connection of its own for the calling thread: a new multiplexed connection to the same
    /// primary (opened at its first command, its I/O driven on this thread, so a request served
    /// here crosses no thread to reach Redis), or on a cluster the shared cluster connection.
    pub fn for_this_thread(&self) -> Result<Self, String> {
        match self {
            RedisConnection::Single(single) => Single::open(Arc::clone(&single.source))
                .map(RedisConnection::Single)
                .map_err(|e| format!("Redis settings: {e}")),
            RedisConnection::Cluster(lazy) => Ok(RedisConnection::Cluster(Arc::clone(lazy))),
        }
    }

    /// `WAIT replicas timeout` on the connection that wrote `key`: how many replicas have
    /// acknowledged every write this connection made so far (on a cluster, the connection to the
    /// primary of `key`'s slot). Returns early once `replicas` have; at `timeout` with fewer.
    pub async fn wait_for_replicas(
        &self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<i64> {
        let wait = redis::cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis().max(1) as u64)
            .to_owned();
        match self {
            RedisConnection::Single(single) => wait.query_async(&mut single.manager.clone()).await,
            RedisConnection::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                Ok(redis::from_redis_value(
                    conn.route_command(wait, route).await?,
                )?)
            }
        }
    }

    /// Every key matching `pattern`, from every primary (one `SCAN` loop per primary), until
    /// `enough` have been found.
    pub async fn scan_keys(&self, pattern: &str, enough: usize) -> RedisResult<Vec<String>> {
        let scan = |cursor: u64| {
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .to_owned()
        };
        let mut found = Vec::new();
        match self {
            RedisConnection::Single(single) => {
                let mut conn = single.manager.clone();
                let mut cursor = 0;
                loop {
                    let (next, keys): (u64, Vec<String>) =
                        scan(cursor).query_async(&mut conn).await?;
                    found.extend(keys);
                    if next == 0 || found.len() >= enough {
                        return Ok(found);
                    }
                    cursor = next;
                }
            }
            RedisConnection::Cluster(lazy) => {
                let mut conn = lazy.get().await?;
                for (host, port) in primaries(&mut conn).await? {
                    let mut cursor = 0;
                    loop {
                        let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port,
                        });
                        let reply = conn.route_command(scan(cursor), route).await?;
                        let (next, keys): (u64, Vec<String>) = redis::from_redis_value(reply)?;
                        found.extend(keys);
                        if found.len() >= enough {
                            return Ok(found);
                        }
                        if next == 0 {
                            break;
                        }
                        cursor = next;
                    }
                }
                Ok(found)
            }
        }
    }
}

/// The cluster's primaries (`host`, `port`), from `CLUSTER NODES`.
async fn primaries(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let reply = conn
        .route_command(
            redis::cmd("CLUSTER").arg("NODES").to_owned(),
            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
        )
        .await?;
    let text: String = redis::from_redis_value(reply)?;
    Ok(parse_primaries(&text))
}

/// Lines of `CLUSTER NODES`: `<id> <host:port@cport[,hostname]> <flags> …`; a primary's flags
/// hold `master` and not `fail`.
fn parse_primaries(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let primary = flags.split(',').any(|f| f == "master")
                && !flags.split(',').any(|f| f == "fail" || f == "noaddr");
            if !primary {
                return None;
            }
            let host_port = address.split(['@', ',']).next()?;
            let (host, port) = host_port.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(single) => single.manager.req_packed_command(cmd),
            RedisConnection::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(single) => {
                single.manager.req_packed_commands(pipeline, offset, count)
            }
            RedisConnection::Cluster(lazy) => Box::pin(async move {
                let mut conn = lazy.get().await?;
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(single) => single.manager.get_db(),
            RedisConnection::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_primaries;

    #[test]
    fn primaries_are_the_masters_that_have_not_failed() {
        let nodes = "\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002,node-2 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 connected 10923-16383
6ec2 127.0.0.1:30004@40004 slave 07c3 0 1426238317239 4 connected
";
        assert_eq!(
            parse_primaries(nodes),
            vec![("127.0.0.1".into(), 30001), ("127.0.0.1".into(), 30002)]
        );
    }
}
