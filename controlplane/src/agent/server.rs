//! The agent's front ends: the local API on a root-only Unix socket, and the Prometheus
//! endpoint on a loopback address.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use super::controller::ControlMsg;
use super::hub::FlowHub;
use crate::api::{Request, Response};

/// Why a front end could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another agent already answers on the socket.
    #[error("another agent is already listening on {0}")]
    AlreadyRunning(String),
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// Socket path or address.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Binds the API socket: removes a stale one, refuses to start beside a live agent, and
/// makes the socket readable and writable by root only.
pub fn bind_api(path: &Path) -> Result<UnixListener, ServerError> {
    let shown = path.display().to_string();
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::AlreadyRunning(shown));
        }
        let _ = std::fs::remove_file(path);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ServerError::Listen {
            path: shown.clone(),
            source,
        })?;
    }
    let listener = UnixListener::bind(path).map_err(|source| ServerError::Listen {
        path: shown.clone(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServerError::Listen {
            path: shown,
            source,
        }
    })?;
    Ok(listener)
}

async fn write_line(stream: &mut tokio::net::unix::OwnedWriteHalf, r: &Response) -> bool {
    let Ok(mut line) = serde_json::to_vec(r) else {
        return false;
    };
    line.push(b'\n');
    stream.write_all(&line).await.is_ok()
}

async fn ask(control: &crossbeam::channel::Sender<ControlMsg>, request: Request) -> Response {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if control
        .send(ControlMsg::Query(Box::new(request), tx))
        .is_err()
    {
        return Response::Error {
            message: "the agent is shutting down".into(),
        };
    }
    rx.await.unwrap_or(Response::Error {
        message: "the agent is shutting down".into(),
    })
}

async fn serve_connection(
    stream: UnixStream,
    control: crossbeam::channel::Sender<ControlMsg>,
    hub: Arc<FlowHub>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let Ok(Some(line)) = lines.next_line().await else {
        return;
    };
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = write_line(
                &mut write,
                &Response::Error {
                    message: format!("bad request: {e}"),
                },
            )
            .await;
            return;
        }
    };
    match request {
        Request::Observe {
            filter,
            last,
            follow,
        } => {
            if let Err(message) = filter.validate() {
                let _ = write_line(&mut write, &Response::Error { message }).await;
                return;
            }
            let (records, live) = hub.snapshot(&filter, last, follow);
            for r in records {
                if !write_line(&mut write, &Response::Flow(Box::new(r))).await {
                    return;
                }
            }
            let Some(mut live) = live else {
                let (_, evicted, lost) = hub.counts();
                let _ = write_line(&mut write, &Response::End { lost, evicted }).await;
                return;
            };
            loop {
                tokio::select! {
                    next = live.recv() => match next {
                        Ok(r) => {
                            if filter.matches(&r)
                                && !write_line(&mut write, &Response::Flow(Box::new((*r).clone()))).await
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::debug!("an observer fell {n} flows behind");
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                    // The client hung up (or sent something): stop following.
                    _ = lines.next_line() => return,
                }
            }
        }
        other => {
            let response = ask(&control, other).await;
            let _ = write_line(&mut write, &response).await;
        }
    }
}

/// Serves the local API until the listener fails.
pub async fn serve_api(
    listener: UnixListener,
    control: crossbeam::channel::Sender<ControlMsg>,
    hub: Arc<FlowHub>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, control.clone(), Arc::clone(&hub)));
            }
            Err(e) => {
                tracing::error!("local API: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves `GET /metrics` in the Prometheus text format.
pub async fn serve_metrics(listener: TcpListener, control: crossbeam::channel::Sender<ControlMsg>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() {
                match stream.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let head = String::from_utf8_lossy(&buf[..len]);
            let (status, body) = if head.starts_with("GET /metrics ") {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let body = if control.send(ControlMsg::Metrics(tx)).is_ok() {
                    rx.await.unwrap_or_default()
                } else {
                    String::new()
                };
                ("200 OK", body)
            } else {
                ("404 Not Found", "try GET /metrics\n".to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: \
                 close\r\n\r\n{body}",
                perf::prometheus::CONTENT_TYPE,
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
