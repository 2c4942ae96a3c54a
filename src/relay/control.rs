//! The relay's control socket (`control.sock` in its runtime directory, 0600, its own user's):
//! `systemctl reload` runs `neustream relay-reload` (as root: `ExecReload=+`), which reads the
//! stream's env file and hands it over here. Only this stream's relay, and root, ever hold its
//! destination keys.
//!
//! Protocol: the client writes the env file's text and shuts its side down; the relay answers
//! one line, `ok` or `error: <why>`.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use crate::envfile::{self, StreamSpec};

pub const SOCKET: &str = "control.sock";
/// An env file is far smaller (64 destinations of at most 2 KiB).
const MAX_REQUEST: u64 = 1 << 20;

/// A new description of the stream, and where to say how applying it went.
pub struct Reload {
    pub spec: StreamSpec,
    pub done: oneshot::Sender<Result<String, String>>,
}

/// Listens at `dir/control.sock` and sends each well-formed request to `reloads`.
pub fn listen(dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, reloads: mpsc::Sender<Reload>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let reloads = reloads.clone();
        tokio::spawn(async move {
            let mut text = String::new();
            let mut limited = (&mut conn).take(MAX_REQUEST);
            let read = limited.read_to_string(&mut text);
            let answer = match tokio::time::timeout(std::time::Duration::from_secs(5), read).await {
                Err(_) => Err("no request within 5 s".to_string()),
                Ok(Err(e)) => Err(format!("unreadable request: {e}")),
                Ok(Ok(_)) => match envfile::parse(&text).and_then(|v| StreamSpec::from_vars(&v)) {
                    Err(e) => Err(format!("not a stream description: {e}")),
                    Ok(spec) => {
                        let (done, result) = oneshot::channel();
                        if reloads.send(Reload { spec, done }).await.is_err() {
                            Err("the relay is stopping".to_string())
                        } else {
                            result
                                .await
                                .unwrap_or_else(|_| Err("the relay is stopping".into()))
                        }
                    }
                },
            };
            let line = match &answer {
                Ok(what) => format!("ok {what}\n"),
                Err(why) => {
                    warn!("reload refused: {why}");
                    format!("error: {why}\n")
                }
            };
            let _ = conn.write_all(line.as_bytes()).await;
        });
    }
}

/// The client side (`neustream relay-reload`): sends `text`, returns the relay's answer.
pub async fn send(socket: &PathBuf, text: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    let mut conn = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("failed to reach the relay at {}", socket.display()))?;
    conn.write_all(text.as_bytes()).await?;
    conn.shutdown().await?;
    let mut answer = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        conn.read_to_string(&mut answer),
    )
    .await
    .context("the relay did not answer within 20 s")??;
    let answer = answer.trim().to_string();
    match answer.strip_prefix("ok") {
        Some(what) => Ok(what.trim().to_string()),
        None => anyhow::bail!("the relay refused the reload: {answer}"),
    }
}
