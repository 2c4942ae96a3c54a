//! A destination published by its own ffmpeg (the fallback engine, `NEUSTREAM_RTMP_ENGINE=ffmpeg`):
//! FLV from the destination's queue on its stdin, the key in an option file on descriptor 3,
//! its log lines parsed for how the session went.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use super::ffmpeg::{self, Signal};
use super::flv::{Tag, FILE_HEADER};
use super::output::{Ended, Output, CONNECT_TIMEOUT, REFUSED_WITHIN};
use super::process::{self, LineLog};
use super::state::{DestinationState, ErrorClass};
use super::Shared;

pub async fn session(
    shared: &Shared,
    output: &Output,
    log: &LineLog,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let dest = &output.dest;
    let queue = &output.queue;
    let index = output.index();
    let key = shared.key.as_str();
    let preset = ffmpeg::preset(dest, &shared.tls);
    let args = ffmpeg::destination_args(dest);
    let mut child = match process::spawn(process::Spec {
        ffmpeg: &shared.ffmpeg,
        args: &args,
        preset: Some(&preset),
        stdin: true,
        stdout: false,
    }) {
        Ok(child) => child,
        Err(e) => {
            error!(
                stream_key = key,
                destination_index = index,
                "{key}: destination {index}: failed to run ffmpeg ({}): {e}",
                shared.ffmpeg.display()
            );
            return Ended {
                class: Some(ErrorClass::Unreachable),
                live_for: Duration::ZERO,
                detail: None,
            };
        }
    };
    let stdin = child.stdin.take().expect("stdin is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let (signals, mut signal_rx) = mpsc::unbounded_channel();
    let lines = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(s) = log.line(&line) {
                    let _ = signals.send(s);
                }
            }
        })
    };

    shared.hub.attach(output);
    let writer = write_queue(output, stdin);
    tokio::pin!(writer);
    let started = Instant::now();
    let mut published: Option<Instant> = None;
    let mut failure: Option<Signal> = None;
    let mut writer_done = false;
    let mut stopping = false;
    let mut timed_out = false;
    // When ffmpeg is killed: it has not published in time, or not stopped in time.
    let mut kill_at = Some(tokio::time::Instant::from_std(started + CONNECT_TIMEOUT));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            Some(signal) = signal_rx.recv() => match signal {
                Signal::Publishing => {
                    published = Some(Instant::now());
                    output.update(&shared.board, DestinationState::live);
                    if !stopping {
                        kill_at = None;
                    }
                }
                other => failure = Some(other),
            },
            _ = &mut writer, if !writer_done => writer_done = true,
            _ = stop.wait_for(|s| *s), if !stopping => {
                // Closing the queue ends the writer and so ffmpeg's input: ffmpeg writes its
                // trailer and closes the publish cleanly (FCUnpublish, deleteStream).
                stopping = true;
                queue.close();
                kill_at = Some(tokio::time::Instant::now() + shared.stop_timeout);
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or_else(tokio::time::Instant::now)),
                if kill_at.is_some() => {
                if !stopping {
                    timed_out = true;
                }
                let _ = child.start_kill();
                kill_at = None;
            }
        }
    };
    queue.close();
    // The last lines (the reason of a failure) come after the exit: read them all.
    let _ = tokio::time::timeout(Duration::from_secs(1), lines).await;
    while let Ok(signal) = signal_rx.try_recv() {
        if signal != Signal::Publishing {
            failure = Some(signal);
        }
    }
    let live_for = published.map_or(Duration::ZERO, |at| at.elapsed());
    if stopping {
        let how = match &status {
            Ok(s) if s.success() => "closed cleanly".to_string(),
            Ok(s) => format!("ended ({s})"),
            Err(e) => format!("ended ({e})"),
        };
        info!(
            stream_key = key,
            destination_index = index,
            destination_platform = dest.platform(),
            "{key}: destination {index} ({}) {how}",
            dest.platform()
        );
        return Ended {
            class: None,
            live_for,
            detail: None,
        };
    }
    let class = match failure {
        Some(Signal::Unreachable) => ErrorClass::Unreachable,
        Some(Signal::Certificate) => ErrorClass::Certificate,
        Some(Signal::Tls) => ErrorClass::Tls,
        _ if timed_out => ErrorClass::Timeout,
        _ if published.is_none() || live_for < REFUSED_WITHIN => ErrorClass::Refused,
        _ => ErrorClass::Dropped,
    };
    Ended {
        class: Some(class),
        live_for,
        detail: None,
    }
}

/// Feeds ffmpeg: the FLV header, then the queue's tags as they come, in one write per batch.
/// Ends (closing ffmpeg's input) when the queue is closed, or when ffmpeg stops reading.
async fn write_queue(output: &Output, mut stdin: ChildStdin) {
    let queue = &output.queue;
    if stdin.write_all(&FILE_HEADER).await.is_err() {
        return;
    }
    let mut tags: Vec<Tag> = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    while queue.take(&mut tags).await {
        buf.clear();
        for tag in tags.drain(..) {
            tag.write_to(&mut buf);
        }
        if stdin.write_all(&buf).await.is_err() {
            return; // ffmpeg exited: its exit status tells why
        }
        output.state.lock().unwrap().bytes += buf.len() as u64;
    }
}
