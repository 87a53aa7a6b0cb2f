//! The bytes of each HTTP connection, between the socket and actix-http's dispatcher: answers the
//! dispatcher writes on its own, before any handler or middleware runs (a request head over its
//! limits: 431; a malformed one: 400; one too slow to arrive: 408), leave with the JSON error
//! body every other answer has (SPEC 10). actix-http writes those with an empty body and offers
//! no hook to change them, so the one place left is the connection itself.
//!
//! An answer is rewritten when a write starts with its head: the status 4xx or 5xx and
//! `content-length: 0`. The service's own answers never match (every error of theirs has a JSON
//! body, see [`crate::routes::json_error_body`]); the dispatcher writes the head of each answer
//! whole, so checking where a write starts costs nine bytes of comparison per write.
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use actix_web::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose empty error answers get the JSON error body.
pub struct JsonErrors<T> {
    io: T,
    /// A rewritten answer, and how much of it the socket has taken: written before anything
    /// else.
    pending: Vec<u8>,
    sent: usize,
}

impl<T> JsonErrors<T> {
    pub fn new(io: T) -> Self {
        Self {
            io,
            pending: Vec::new(),
            sent: 0,
        }
    }
}

impl<T: AsyncWrite + Unpin> JsonErrors<T> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if !self.pending.is_empty() {
            self.pending = Vec::new();
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }
}

/// When `buf` starts with the head of an error answer with an empty body: how many bytes that
/// head is, and the answer to send instead (the same status line and headers, a JSON body).
fn rewritten(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let version = buf.get(..9)?;
    if version != b"HTTP/1.1 " && version != b"HTTP/1.0 " {
        return None;
    }
    if !matches!(buf.get(9), Some(b'4' | b'5')) {
        return None;
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let mut lines = buf[..end].split(|&b| b == b'\n');
    let status_line = lines.next()?;
    let code = std::str::from_utf8(buf.get(9..12)?).ok()?.parse().ok()?;
    let status = StatusCode::from_u16(code).ok()?;
    let mut headers = Vec::new();
    let mut empty = false;
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let lower = line.to_ascii_lowercase();
        if lower.starts_with(b"content-type:") {
            return None;
        }
        if lower.starts_with(b"content-length:") {
            empty = lower[b"content-length:".len()..].trim_ascii() == b"0";
            continue;
        }
        headers.push(line);
    }
    if !empty {
        return None;
    }
    let message = status.canonical_reason().unwrap_or("Request failed");
    let body = crate::error::ErrorCode::of_status(status)
        .body(message)
        .to_string();
    let mut answer = Vec::with_capacity(end + body.len() + 64);
    answer.extend_from_slice(status_line);
    answer.push(b'\n');
    for line in headers {
        answer.extend_from_slice(line);
        answer.extend_from_slice(b"\r\n");
    }
    answer.extend_from_slice(b"content-type: application/json\r\n");
    answer.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    answer.extend_from_slice(body.as_bytes());
    Some((end + 4, answer))
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonErrors<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonErrors<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        if let Some((taken, answer)) = rewritten(buf) {
            this.pending = answer;
            // The head is taken whole; its replacement goes out now or before the next write,
            // flush or shutdown (a socket not ready has registered this task to be woken).
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(taken));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(head: &str) -> Option<String> {
        rewritten(head.as_bytes()).map(|(taken, a)| {
            assert_eq!(taken, head.find("\r\n\r\n").expect("a whole head") + 4);
            String::from_utf8(a).expect("UTF-8")
        })
    }

    #[test]
    fn an_empty_431_gets_the_json_error_body() {
        let head = "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                    connection: close\r\ndate: Wed, 02 Dec 2026 18:00:00 GMT\r\n\r\n";

        let a = answer(head).expect("rewritten");

        let body = r#"{"success":false,"error":"Request Header Fields Too Large","error_code":"header_fields_too_large"}"#;
        assert!(
            a.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{a}"
        );
        assert!(a.contains("connection: close\r\n"), "{a}");
        assert!(a.contains("content-type: application/json\r\n"), "{a}");
        assert!(
            a.ends_with(&format!("content-length: {}\r\n\r\n{body}", body.len())),
            "{a}"
        );
    }

    #[test]
    fn answers_with_a_body_or_a_success_status_are_left_alone() {
        for head in [
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 30\r\n\r\n",
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ncontent-type: text/plain\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
            "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
            "{\"success\":false}",
            "",
        ] {
            assert_eq!(answer(head), None, "{head}");
        }
    }
}
