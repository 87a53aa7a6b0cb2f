//! `delay-proxy`: a TCP proxy that delays each direction by a fixed time, so a database on
//! loopback behaves like one a network hop away (0.5 ms each way = a 1 ms round trip).
//!
//! Each chunk read is stamped and written out once its delay has passed, by a writer thread of
//! its own: the delay adds latency without limiting throughput (chunks in flight overlap), as a
//! longer wire would. Plain threads sleeping with `std::thread::sleep` (a nanosleep, with no
//! timer slack), not tokio's timer: its 1 ms ticks made 0.5 ms each way a 3.2 ms round trip.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Args;

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
    let listener = TcpListener::bind(("127.0.0.1", args.listen))
        .map_err(|e| format!("listen on {}: {e}", args.listen))?;
    eprintln!(
        "delay-proxy: 127.0.0.1:{} -> {} (+{delay:?} each way)",
        args.listen, args.upstream
    );
    for client in listener.incoming() {
        let client = client.map_err(|e| format!("accept: {e}"))?;
        let upstream = args.upstream.clone();
        thread::spawn(move || {
            if let Err(e) = relay(client, &upstream, delay) {
                eprintln!("delay-proxy: connection ended: {e}");
            }
        });
    }
    Ok(())
}

fn relay(client: TcpStream, upstream: &str, delay: Duration) -> std::io::Result<()> {
    let server = TcpStream::connect(upstream)?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let up = delayed(client.try_clone()?, server.try_clone()?, delay);
    let down = delayed(server, client, delay);
    let _ = up.join();
    let _ = down.join();
    Ok(())
}

/// Copies `from` to `to` on a thread of its own, each chunk `delay` after it was read.
fn delayed(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> JoinHandle<()> {
    thread::spawn(move || {
        let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
        let writer = thread::spawn(move || {
            // A sleep may overrun by the thread's timer slack (50 µs by default): none here.
            // SAFETY: PR_SET_TIMERSLACK takes a number and changes only this thread's slack.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1_u64) };
            for (at, chunk) in due {
                let wait = at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    thread::sleep(wait);
                }
                if to.write_all(&chunk).is_err() {
                    break;
                }
            }
            let _ = to.shutdown(Shutdown::Write);
        });
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer) {
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
        let _ = writer.join();
    })
}
