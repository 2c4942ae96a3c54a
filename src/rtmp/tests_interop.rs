//! The driver against real servers on 127.0.0.1: nginx with libnginx-mod-rtmp (announcing
//! 4096- and 128-byte chunks, with on_publish/on_publish_done notifications), MediaMTX over
//! RTMP and RTMPS (built by tests/support/build-mediamtx.sh), ffmpeg/ffprobe to publish and to
//! read back. The server helpers are the shared ones of tests/common, included by path.
//!
//! Every process started here is stopped by a guard's Drop; every wait is bounded.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Class, Endpoint, Media, MediaKind, Options, Player, Publisher, TlsConfig};
use crate::relay::flv;

#[path = "../../tests/common/mediamtx_binary.rs"]
#[allow(dead_code)]
mod mediamtx;
#[path = "../../tests/common/nginx.rs"]
#[allow(dead_code)]
mod nginx;
#[path = "../../tests/common/probe.rs"]
#[allow(dead_code)]
mod probe;
#[path = "../../tests/common/publish_hooks.rs"]
#[allow(dead_code)]
mod publish_hooks;
#[path = "../../tests/common/rtmps.rs"]
#[allow(dead_code)]
mod rtmps;
#[path = "../../tests/common/util.rs"]
#[allow(dead_code)]
mod util;

use util::{free_port, require_tool, wait_for};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/small-h264-aac.flv"
);
const KEY: &str = "sk-live-0123-secret";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("neustream-rtmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture() -> Vec<Media> {
    read_flv(Path::new(FIXTURE))
}

fn read_flv(path: &Path) -> Vec<Media> {
    let mut parser = flv::Parser::new();
    parser.push(&std::fs::read(path).unwrap());
    let mut tags = Vec::new();
    while let Some(tag) = parser.next_tag().unwrap() {
        tags.push(Media::from(tag));
    }
    assert!(tags.len() > 100);
    tags
}

fn is_config(m: &Media) -> bool {
    match m.kind {
        MediaKind::Data => true,
        MediaKind::Video | MediaKind::Audio => m.payload.get(1) == Some(&0),
    }
}

/// The fixture, published in real time and looped with timestamps continuing.
struct Feed {
    tags: Vec<Media>,
    period: u32,
    next: usize,
    lap: u32,
    start: Instant,
}

impl Feed {
    fn new() -> Feed {
        Feed::of(fixture())
    }

    fn of(tags: Vec<Media>) -> Feed {
        let period = tags.iter().map(|t| t.timestamp).max().unwrap() + 33;
        Feed {
            tags,
            period,
            next: 0,
            lap: 0,
            start: Instant::now(),
        }
    }

    /// Publishes what is due for `time` more, watching `closed()` between batches as the relay
    /// does.
    async fn run(&mut self, p: &mut Publisher, time: Duration) {
        let until = self.start.elapsed() + time;
        while self.start.elapsed() < until {
            let now = self.start.elapsed().as_millis() as u32;
            let mut batch = Vec::new();
            loop {
                let t = &self.tags[self.next];
                let ts = t.timestamp + self.lap * self.period;
                if ts > now {
                    break;
                }
                if self.lap == 0 || !is_config(t) {
                    batch.push(Media {
                        timestamp: ts,
                        ..t.clone()
                    });
                }
                self.next += 1;
                if self.next == self.tags.len() {
                    (self.next, self.lap) = (0, self.lap + 1);
                }
            }
            if !batch.is_empty() {
                p.send(&batch).await.unwrap();
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                e = p.closed() => panic!("connection ended while publishing: {e}"),
            }
        }
    }
}

fn endpoint(port: u16, tls: bool, stream: &str) -> Endpoint {
    Endpoint {
        host: "127.0.0.1".into(),
        port,
        tls,
        app: "live".into(),
        stream: stream.into(),
    }
}

fn plain_tls() -> TlsConfig {
    TlsConfig::new(true, Path::new("/etc/ssl/certs/ca-certificates.crt")).unwrap()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `ffmpeg -re -stream_loop -1` of the fixture to `url`.
fn ffmpeg_publish(url: &str) -> Proc {
    require_tool("ffmpeg", "ffmpeg");
    Proc(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-stream_loop", "-1", "-i", FIXTURE])
            .args(["-c", "copy", "-f", "flv", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg"),
    )
}

/// Starts ffmpeg recording 2 s of `url` into `out` (to probe once it is done).
fn ffmpeg_record(url: &str, out: &Path) -> Proc {
    require_tool("ffmpeg", "ffmpeg");
    Proc(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
            .args(["-rw_timeout", "5000000", "-i", url])
            .args(["-t", "2", "-c", "copy", "-f", "flv"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg"),
    )
}

/// Waits (bounded) for a recording child to finish on its own.
fn wait_done(proc: &mut Proc, limit: Duration) -> bool {
    wait_for(limit, Duration::from_millis(50), || {
        proc.0.try_wait().ok().flatten()
    })
    .is_some_and(|s| s.success())
}

fn check_h264_aac(path: &Path, min_span: f64) {
    let got = probe::probe(path).unwrap_or_else(|| panic!("nothing at {}", path.display()));
    assert_eq!(got.video_codec, "h264", "{got:?}");
    assert_eq!(got.audio_codec, "aac", "{got:?}");
    assert!(got.video_span >= min_span, "{got:?}");
    assert!(got.audio_packets > 20, "{got:?}");
    assert!(got.worst_video_gap < 0.5, "{got:?}");
}

#[tokio::test]
async fn publishes_to_nginx_announcing_4096_and_128() {
    for chunk_size in [4096u32, 128] {
        let dir = scratch(&format!("nginx-{chunk_size}"));
        let hooks = publish_hooks::PublishHooks::start();
        let server = nginx::RtmpServer::start_with(&dir, free_port(), Some(&hooks.url), chunk_size);
        let ep = endpoint(server.port, false, KEY);
        let mut p = Publisher::connect(&ep, &plain_tls(), &Options::default())
            .await
            .unwrap();
        Feed::new().run(&mut p, Duration::from_secs(4)).await;
        let stats = p.stats();
        assert!(stats.media_bytes > 40_000, "{stats:?}");
        assert!(stats.socket_bytes > stats.media_bytes, "{stats:?}");
        let tcp = stats.tcp.expect("TCP_INFO of our socket");
        assert!(tcp.bytes_acked > stats.media_bytes, "{stats:?}");
        p.close(Duration::from_secs(5)).await;
        let done = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            (!hooks.calls("publish_done", KEY).is_empty()).then_some(())
        });
        assert!(
            done.is_some(),
            "no on_publish_done (chunk size {chunk_size})"
        );
        // Give a second one a chance to show up, then count.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(hooks.calls("publish", KEY).len(), 1);
        assert_eq!(hooks.calls("publish_done", KEY).len(), 1);
        check_h264_aac(&server.recording(KEY), 3.0);
        let log = std::fs::read_to_string(dir.join("error.log")).unwrap();
        assert!(!log.contains("[error]"), "nginx logged errors:\n{log}");
    }
}

#[tokio::test]
async fn publishes_to_mediamtx_over_rtmp_and_rtmps() {
    let dir = scratch("mtx-publish");
    let certs = rtmps::make_certs(&dir.join("certs"));
    let plain = rtmps::RtmpsServer::plain(&dir.join("plain"));
    let secure = rtmps::RtmpsServer::start(&dir.join("secure"), &certs.good);
    let verified = TlsConfig::new(true, &certs.ca).unwrap();
    for (server, tls) in [(&plain, false), (&secure, true)] {
        let ep = endpoint(server.port, tls, KEY);
        let mut p = Publisher::connect(&ep, &verified, &Options::default())
            .await
            .unwrap();
        // Read it back from the server while publishing, once MediaMTX has seen the tracks.
        let mut feed = Feed::new();
        let path = format!("live/{KEY}");
        for _ in 0..40 {
            if server.saw_publish(&path) {
                break;
            }
            feed.run(&mut p, Duration::from_millis(250)).await;
        }
        assert!(server.saw_publish(&path), "{}", server.log());
        let scheme = if tls { "rtmps" } else { "rtmp" };
        let url = format!("{scheme}://127.0.0.1:{}/live/{KEY}", server.port);
        let out = dir.join(format!("{scheme}.flv"));
        let mut reader = ffmpeg_record(&url, &out);
        feed.run(&mut p, Duration::from_secs(4)).await;
        let stats = p.stats();
        p.close(Duration::from_secs(5)).await;
        assert!(
            wait_done(&mut reader, Duration::from_secs(5)),
            "ffmpeg read nothing over {scheme}"
        );
        check_h264_aac(&out, 1.5);
        if tls {
            // TLS records of up to 16 KB, not one per chunk: a few percent on top.
            assert!(
                stats.socket_bytes < stats.media_bytes * 13 / 10,
                "{stats:?}"
            );
        }
    }
}

#[tokio::test]
async fn plays_from_mediamtx() {
    let dir = scratch("mtx-play");
    let server = rtmps::RtmpsServer::plain(&dir);
    let _source = ffmpeg_publish(&format!("rtmp://127.0.0.1:{}/live/source", server.port));
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        server.saw_publish("live/source").then_some(())
    });
    assert!(up.is_some(), "ffmpeg did not publish: {}", server.log());
    let ep = endpoint(server.port, false, "source");
    let mut player = Player::connect(&ep, &plain_tls(), &Options::default())
        .await
        .unwrap();
    let start = Instant::now();
    let (mut keyframes, mut audio, mut video) = (0, 0, Vec::new());
    let mut config = (false, false);
    while start.elapsed() < Duration::from_secs(3) {
        let m = tokio::time::timeout(Duration::from_secs(2), player.next())
            .await
            .expect("media within 2 s")
            .unwrap()
            .expect("not the end");
        match m.kind {
            MediaKind::Video => {
                // AVC: frame type 1 = keyframe; packet type 0 = configuration.
                if m.payload[1] == 0 {
                    config.0 = true;
                } else {
                    video.push(m.timestamp);
                    if m.payload[0] >> 4 == 1 {
                        keyframes += 1;
                    }
                }
            }
            MediaKind::Audio => {
                if m.payload[0] >> 4 == 10 && m.payload[1] == 0 {
                    config.1 = true;
                } else {
                    audio += 1;
                }
            }
            MediaKind::Data => {}
        }
    }
    assert_eq!(config, (true, true), "AVC and AAC configuration first");
    assert!(keyframes >= 2, "{keyframes} keyframes in 3 s (GOP 1 s)");
    assert!(audio > 50, "{audio} audio frames");
    let span = video.last().unwrap() - video.first().unwrap();
    assert!(
        (2000..=4000).contains(&span),
        "video spans {span} ms in 3 s"
    );
    assert!(
        video.windows(2).all(|w| w[1] + 200 >= w[0]),
        "timestamps jump back: {video:?}"
    );
    player.close(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_refused_publish_is_refused() {
    let dir = scratch("refused");
    let hooks = publish_hooks::PublishHooks::start();
    hooks.refuse(true);
    let server = nginx::RtmpServer::start_notifying(&dir, free_port(), Some(&hooks.url));
    let ep = endpoint(server.port, false, KEY);
    let err = Publisher::connect(&ep, &plain_tls(), &Options::default())
        .await
        .err()
        .expect("refused");
    assert_eq!(err.class, Class::Refused, "{err}");
    assert!(!err.message.contains(KEY), "{err}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let opts = Options {
        publish_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let start = Instant::now();
    let err = Publisher::connect(&endpoint(port, false, KEY), &plain_tls(), &opts)
        .await
        .err()
        .expect("timeout");
    let took = start.elapsed();
    assert_eq!(err.class, Class::Timeout, "{err}");
    assert!(err.message.contains("handshake"), "{err}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let port = free_port();
    let err = Publisher::connect(
        &endpoint(port, false, KEY),
        &plain_tls(),
        &Options::default(),
    )
    .await
    .err()
    .expect("unreachable");
    assert_eq!(err.class, Class::Unreachable, "{err}");
}

#[tokio::test]
async fn certificates_are_checked() {
    let dir = scratch("certs");
    let certs = rtmps::make_certs(&dir.join("certs"));
    let verified = TlsConfig::new(true, &certs.ca).unwrap();
    let opts = Options::default();
    for (name, pair) in [("self", &certs.self_signed), ("wrong", &certs.wrong_name)] {
        let server = rtmps::RtmpsServer::start(&dir.join(name), pair);
        let ep = endpoint(server.port, true, KEY);
        let err = Publisher::connect(&ep, &verified, &opts)
            .await
            .err()
            .expect("certificate refused");
        assert_eq!(err.class, Class::Certificate, "{name}: {err}");
        // The operator's explicit choice: no check.
        let unverified = TlsConfig::new(false, Path::new("/nonexistent")).unwrap();
        let p = Publisher::connect(&ep, &unverified, &opts).await.unwrap();
        p.close(Duration::from_secs(2)).await;
    }
    // Plain RTMP to an RTMPS port: MediaMTX resets the connection at our C0.
    let server = rtmps::RtmpsServer::start(&dir.join("good"), &certs.good);
    let quick = Options {
        publish_timeout: Duration::from_secs(2),
        ..Options::default()
    };
    let err = Publisher::connect(&endpoint(server.port, false, KEY), &verified, &quick)
        .await
        .err()
        .expect("no RTMP over an RTMPS port");
    assert_eq!(err.class, Class::Protocol, "{err}");
    assert!(err.message.contains("handshake"), "{err}");
}

/// `ffmpeg -re` of a synthetic HEVC + AAC stream to `url` over RTSP (ffmpeg 5.1 cannot put
/// HEVC in FLV).
fn ffmpeg_publish_hevc(url: &str) -> Proc {
    require_tool("ffmpeg", "ffmpeg");
    Proc(
        Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args([
                "-c:v",
                "libx265",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-x265-params", "keyint=25:min-keyint=25:log-level=error"])
            .args(["-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"])
            .args(["-f", "rtsp", "-rtsp_transport", "tcp", url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg"),
    )
}

/// The relay's path with a codec ffmpeg 5.1's RTMP client cannot carry: HEVC reaches MediaMTX
/// over RTSP, our Player gets it as Enhanced RTMP (thanks to fourCcList), our Publisher sends
/// it to a second MediaMTX, where ffprobe reads HEVC and AAC back over RTSP.
#[tokio::test]
async fn hevc_passes_through_player_and_publisher() {
    let dir = scratch("hevc");
    let ingest = rtmps::RtmpsServer::plain_with_rtsp(&dir.join("ingest"));
    let destination = rtmps::RtmpsServer::plain_with_rtsp(&dir.join("destination"));
    let _source = ffmpeg_publish_hevc(&format!(
        "rtsp://127.0.0.1:{}/live/hevc",
        ingest.rtsp_port.unwrap()
    ));
    let up = wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        ingest.log().contains("stream is available").then_some(())
    });
    assert!(
        up.is_some(),
        "ffmpeg did not publish HEVC: {}",
        ingest.log()
    );
    let opts = Options::default();
    let mut player = Player::connect(&endpoint(ingest.port, false, "hevc"), &plain_tls(), &opts)
        .await
        .unwrap();
    let mut publisher =
        Publisher::connect(&endpoint(destination.port, false, KEY), &plain_tls(), &opts)
            .await
            .unwrap();
    let out = dir.join("destination.mkv");
    let mut reader: Option<Proc> = None;
    let (mut hevc_frames, mut audio) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        let m = tokio::time::timeout(Duration::from_secs(3), player.next())
            .await
            .expect("media within 3 s")
            .unwrap()
            .expect("not the end");
        match m.kind {
            // Enhanced RTMP: IsExVideoHeader, FourCC hvc1.
            MediaKind::Video => {
                assert_eq!(m.payload[0] & 0x80, 0x80, "{:02x?}", &m.payload[..5]);
                assert_eq!(&m.payload[1..5], b"hvc1");
                hevc_frames += 1;
            }
            MediaKind::Audio => audio += 1,
            MediaKind::Data => {}
        }
        publisher.send(&[m]).await.unwrap();
        if reader.is_none() && destination.saw_publish(&format!("live/{KEY}")) {
            let url = format!(
                "rtsp://127.0.0.1:{}/live/{KEY}",
                destination.rtsp_port.unwrap()
            );
            reader = Some(Proc(
                Command::new("ffmpeg")
                    .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
                    .args([
                        "-rtsp_transport",
                        "tcp",
                        "-i",
                        &url,
                        "-t",
                        "2",
                        "-c",
                        "copy",
                    ])
                    .arg(&out)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start ffmpeg"),
            ));
        }
    }
    assert!(hevc_frames > 50, "{hevc_frames} HEVC frames in 6 s");
    assert!(audio > 100, "{audio} audio frames in 6 s");
    let mut reader = reader.expect("the destination saw the publish");
    assert!(
        wait_done(&mut reader, Duration::from_secs(5)),
        "ffmpeg read nothing back: {}",
        destination.log()
    );
    let got = probe::probe(&out).unwrap();
    assert_eq!(got.video_codec, "hevc", "{got:?}");
    assert_eq!(got.audio_codec, "aac", "{got:?}");
    publisher.close(Duration::from_secs(2)).await;
    player.close(Duration::from_secs(2)).await;
}

/// The goal for the wire: at most 1.02x the media bytes, RTMPS included. A 4 Mbit/s
/// H.264 + AAC clip published for 6 s over RTMPS; TLS records of up to 16 KB and 4096-byte
/// chunks keep the overhead to a fraction of a percent plus the two handshakes.
#[tokio::test]
async fn rtmps_carries_at_most_2_percent_more_than_the_media() {
    let dir = scratch("overhead");
    require_tool("ffmpeg", "ffmpeg");
    let clip = dir.join("clip.flv");
    let status = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-b:v",
            "4M",
        ])
        .args([
            "-g", "60", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
        ])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());
    let certs = rtmps::make_certs(&dir.join("certs"));
    let server = rtmps::RtmpsServer::start(&dir.join("server"), &certs.good);
    let tls = TlsConfig::new(true, &certs.ca).unwrap();
    let mut p = Publisher::connect(&endpoint(server.port, true, KEY), &tls, &Options::default())
        .await
        .unwrap();
    Feed::of(read_flv(&clip))
        .run(&mut p, Duration::from_secs(6))
        .await;
    let stats = p.stats();
    p.close(Duration::from_secs(2)).await;
    let ratio = stats.socket_bytes as f64 / stats.media_bytes as f64;
    eprintln!("RTMPS: {stats:?}, {ratio:.4}x the media bytes");
    assert!(stats.media_bytes > 2_000_000, "{stats:?}");
    assert!(ratio <= 1.02, "{ratio:.4}x: {stats:?}");
}
