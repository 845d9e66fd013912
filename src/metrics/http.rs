//! The metrics endpoint: `GET /metrics` over HTTP/1.x, on its own task, never in the way of
//! mail. A request head is read within [`REQUEST_TIME`] and [`MAX_REQUEST`] bytes, at most
//! [`MAX_CLIENTS`] clients are served at once (others are closed at once), anything but
//! `GET /metrics` gets 404 (or 405, or 400 for what is not HTTP).

use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
};
use tracing::warn;

/// Longest request head read.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client may take to send its request head, and to take the answer.
pub const REQUEST_TIME: Duration = Duration::from_secs(5);
/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;

/// Serves `render()` at `/metrics` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, render: fn() -> String) {
    let slots = std::sync::Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: the milter's sessions come first.
                warn!(target: "privacy_milter::metrics", "metrics endpoint: accept failed ({e}); trying again in a moment");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Too many clients at once: this one is closed at once.
            continue;
        };
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(REQUEST_TIME * 2, answer(stream, render)).await;
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, render: fn() -> String) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(REQUEST_TIME, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_REQUEST {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    if read.is_err() {
        // Too slow: no answer.
        return Ok(());
    }
    let response = respond(&head, render);
    tokio::time::timeout(REQUEST_TIME, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await
    .unwrap_or(Ok(()))
}

/// The whole HTTP response to a request head.
fn respond(head: &[u8], render: fn() -> String) -> String {
    let reply = |status: &str, content_type: &str, body: String| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if head.len() > MAX_REQUEST {
        return reply(
            "431 Request Header Fields Too Large",
            "text/plain",
            "request too large\n".into(),
        );
    }
    let line = head
        .split(|&b| b == b'\n')
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .unwrap_or("")
        .trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return reply("400 Bad Request", "text/plain", "bad request\n".into());
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return reply("400 Bad Request", "text/plain", "bad request\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => reply(
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(),
        ),
        (_, "/metrics") => reply("405 Method Not Allowed", "text/plain", "use GET\n".into()),
        _ => reply(
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> String {
        "# EOF\n".into()
    }

    #[test]
    fn only_get_metrics_is_answered() {
        assert!(respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", text)
            .starts_with("HTTP/1.1 200 OK"));
        assert!(respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", text).starts_with("HTTP/1.1 200"));
        assert!(respond(b"GET / HTTP/1.1\r\n\r\n", text).starts_with("HTTP/1.1 404"));
        assert!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", text).starts_with("HTTP/1.1 405"));
        for bad in [
            &b"\x16\x03\x01garbage"[..],
            b"GET\r\n\r\n",
            b"GET /metrics FTP/1\r\n\r\n",
            b"",
        ] {
            assert!(respond(bad, text).starts_with("HTTP/1.1 400"), "{bad:?}");
        }
        assert!(respond(&vec![b'a'; MAX_REQUEST + 1], text).starts_with("HTTP/1.1 431"));
    }
}
