//! A destination published by the relay's own RTMP client ([`crate::rtmp`], the native engine):
//! one TCP (or TLS) connection; the queue's tags become RTMP messages, a batch in one write.
//! The GOP cache's snapshot is queued once the server has accepted the publish, so the
//! destination's first picture is the newest keyframe, not one from before the connect.

use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info};

use super::flv::Tag;
use super::output::{Ended, Output};
use super::process::LineLog;
use super::state::{DestinationState, ErrorClass};
use super::tcpinfo::Sample;
use super::Shared;
use crate::destination::Destination;
use crate::platforms::{self, Accepts};
use crate::rtmp::{self, Class, Endpoint, Media, Publisher};

/// How often the connection's TCP counters are read while publishing (one getsockopt): the
/// state file, written every 2 s, is then at most this late on what the server acknowledged.
const TCP_EVERY: Duration = Duration::from_millis(200);

/// The destination as the RTMP client addresses it.
pub fn endpoint(dest: &Destination) -> Endpoint {
    let (host, port) = dest.host_port();
    Endpoint {
        host,
        port,
        tls: dest.public_url().starts_with("rtmps://"),
        app: dest.app().to_owned(),
        stream: dest.key().to_owned(),
    }
}

pub fn class(class: &Class) -> ErrorClass {
    match class {
        Class::Refused => ErrorClass::Refused,
        Class::Unreachable => ErrorClass::Unreachable,
        Class::Certificate => ErrorClass::Certificate,
        Class::Tls => ErrorClass::Tls,
        Class::Dropped => ErrorClass::Dropped,
        Class::Timeout => ErrorClass::Timeout,
        Class::Protocol => ErrorClass::Protocol,
    }
}

fn failed(e: rtmp::Error, live_for: Duration) -> Ended {
    Ended {
        class: Some(class(&e.class)),
        live_for,
        detail: Some(e.message),
    }
}

pub async fn session(
    shared: &Shared,
    output: &Output,
    log: &LineLog,
    mut stop: watch::Receiver<bool>,
    accepts: &Accepts,
) -> Ended {
    let dest = &output.dest;
    let index = output.index();
    let key = shared.key.as_str();
    let ep = endpoint(dest);
    let tls = match shared.native_tls(ep.tls) {
        Ok(tls) => tls,
        Err(e) => {
            return Ended {
                class: Some(ErrorClass::Certificate),
                live_for: Duration::ZERO,
                detail: Some(e),
            }
        }
    };
    let opts = shared.rtmp_options();
    let mut publisher = tokio::select! {
        p = Publisher::connect(&ep, &tls, &opts) => match p {
            Ok(p) => p,
            Err(e) => return failed(e, Duration::ZERO),
        },
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            return Ended { class: None, live_for: Duration::ZERO, detail: None };
        }
    };
    let published = Instant::now();
    let message = format!(
        "{key}: destination {index} ({}) publishing to {}",
        dest.platform(),
        dest.redacted()
    );
    let platform = dest.platform();
    if log.is_quiet() {
        debug!(
            stream_key = key,
            destination_index = index,
            destination_platform = platform,
            "{message}"
        );
    } else {
        info!(
            stream_key = key,
            destination_index = index,
            destination_platform = platform,
            "{message}"
        );
    }
    output.update(&shared.board, DestinationState::live);
    shared.hub.attach(output);

    let queue = &output.queue;
    let mut tags: Vec<Tag> = Vec::new();
    let mut batch: Vec<Media> = Vec::new();
    let mut sampled = Instant::now();
    // A new publisher whose codecs this destination cannot take ends the session cleanly.
    let mut codecs = shared.hub.codecs();
    codecs.mark_unchanged();
    // Watched while a batch is written (the loop's own `stop` is borrowed by its select).
    let mut stopping = stop.clone();
    let error = loop {
        tokio::select! {
            more = queue.take(&mut tags) => {
                if !more {
                    break None; // closed: the destination is being stopped
                }
                let bytes: usize = tags.iter().map(Tag::wire_len).sum();
                batch.clear();
                batch.extend(tags.drain(..).map(Media::from));
                tokio::select! {
                    sent = publisher.send(&batch) => if let Err(e) = sent {
                        break Some(e);
                    },
                    // A destination that takes nothing is not waited for at a stop.
                    _ = async { let _ = stopping.wait_for(|s| *s).await; } => {
                        sample(output, &publisher);
                        output.tcp.lock().unwrap().end_connection();
                        queue.close();
                        return Ended { class: None, live_for: published.elapsed(), detail: None };
                    }
                }
                output.state.lock().unwrap().bytes += bytes as u64;
                if sampled.elapsed() >= TCP_EVERY {
                    sampled = Instant::now();
                    sample(output, &publisher);
                }
            }
            e = publisher.closed() => break Some(e),
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break None,
            Ok(()) = codecs.changed() => {
                let stream = codecs.borrow_and_update().clone();
                if platforms::check(dest.platform(), accepts, &stream).is_err() {
                    break None;
                }
            }
        }
    };
    queue.close();
    sample(output, &publisher);
    output.tcp.lock().unwrap().end_connection();
    let live_for = published.elapsed();
    match error {
        Some(e) => {
            // A server that closes at once after accepting the publish checked the key then.
            let mut ended = failed(e, live_for);
            if ended.class == Some(ErrorClass::Dropped) && live_for < super::output::REFUSED_WITHIN
            {
                ended.class = Some(ErrorClass::Refused);
            }
            ended
        }
        None => {
            publisher.close(shared.stop_timeout).await;
            info!(
                stream_key = key,
                destination_index = index,
                destination_platform = dest.platform(),
                "{key}: destination {index} ({}) closed cleanly",
                dest.platform()
            );
            Ended {
                class: None,
                live_for,
                detail: None,
            }
        }
    }
}

fn sample(output: &Output, publisher: &Publisher) {
    let stats = publisher.stats();
    let tcp = stats.tcp.unwrap_or_default();
    output.tcp.lock().unwrap().update(Sample {
        bytes_acked: tcp.bytes_acked,
        bytes_sent: stats.socket_bytes,
        rtt_us: tcp.rtt_us,
        delivery_rate: tcp.delivery_rate_bps,
    });
}
