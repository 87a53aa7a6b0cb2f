//! `delay-proxy`: a TCP proxy that delays each direction by a fixed time, so a database on
//! loopback behaves like one a network hop away (0.5 ms each way = a 1 ms round trip).
//!
//! Each chunk read is stamped and written out once its delay has passed, by a writer task of
//! its own: the delay adds latency without limiting throughput (chunks in flight overlap), as a
//! longer wire would.
use std::time::Duration;

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[derive(Args)]
pub struct ProxyArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    listen: u16,
    /// Where to forward, `host:port`.
    #[arg(long)]
    upstream: String,
    /// Delay added in each direction, milliseconds (fractions allowed).
    #[arg(long, default_value_t = 0.5)]
    delay_ms: f64,
}

pub fn run(args: ProxyArgs) -> Result<(), String> {
    let delay = Duration::from_secs_f64(args.delay_ms.max(0.0) / 1000.0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", args.listen))
            .await
            .map_err(|e| format!("listen on {}: {e}", args.listen))?;
        eprintln!(
            "delay-proxy: 127.0.0.1:{} -> {} (+{delay:?} each way)",
            args.listen, args.upstream
        );
        loop {
            let (client, _) = listener
                .accept()
                .await
                .map_err(|e| format!("accept: {e}"))?;
            let upstream = args.upstream.clone();
            tokio::spawn(async move {
                if let Err(e) = relay(client, &upstream, delay).await {
                    eprintln!("delay-proxy: connection ended: {e}");
                }
            });
        }
    })
}

async fn relay(client: TcpStream, upstream: &str, delay: Duration) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(delayed(client_read, server_write, delay));
    let down = tokio::spawn(delayed(server_read, client_write, delay));
    let _ = tokio::join!(up, down);
    Ok(())
}

/// Copies `from` to `to`, each chunk `delay` after it was read.
async fn delayed(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if chunks
                    .send((Instant::now() + delay, buffer[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    drop(chunks);
    let _ = writer.await;
}
