//! A real TLS-terminating RTMP server: MediaMTX with `rtmpEncryption: strict` on 127.0.0.1,
//! and the certificates to test a relay's verification with (made by openssl).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A CA, a server certificate it signed for 127.0.0.1, one it signed for another name, and
/// a self-signed certificate for 127.0.0.1.
pub struct Certs {
    pub ca: PathBuf,
    /// (certificate, key)
    pub good: (PathBuf, PathBuf),
    pub wrong_name: (PathBuf, PathBuf),
    pub self_signed: (PathBuf, PathBuf),
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (Debian: openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn make_certs(dir: &Path) -> Certs {
    std::fs::create_dir_all(dir).unwrap();
    let days = "2";
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            days,
            "-subj",
            "/CN=Neustream test CA",
        ],
    );
    for (name, san) in [
        ("good", "IP:127.0.0.1"),
        ("wrong", "DNS:live-api-s.facebook.com"),
    ] {
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                "/CN=rtmps test server",
            ],
        );
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("subjectAltName={san}\n"),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                days,
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "self.key",
            "-out",
            "self.crt",
            "-days",
            days,
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
    );
    Certs {
        ca: dir.join("ca.crt"),
        good: (dir.join("good.crt"), dir.join("good.key")),
        wrong_name: (dir.join("wrong.crt"), dir.join("wrong.key")),
        self_signed: (dir.join("self.crt"), dir.join("self.key")),
    }
}

/// MediaMTX accepting RTMPS only, with the given certificate (or, from [`Self::plain`], plain
/// RTMP only); its log in `<dir>/mediamtx.log`.
pub struct RtmpsServer {
    pub port: u16,
    /// RTSP over TCP, from [`Self::plain_with_rtsp`].
    pub rtsp_port: Option<u16>,
    log: PathBuf,
    child: Child,
}

impl RtmpsServer {
    pub fn start(dir: &Path, (cert, key): &(PathBuf, PathBuf)) -> Self {
        let port = super::free_port();
        let listeners = format!(
            "rtsp: no\nrtmpAddress: 127.0.0.1:{plain}\nrtmpEncryption: \"strict\"\n\
             rtmpsAddress: 127.0.0.1:{port}\nrtmpServerKey: {key}\nrtmpServerCert: {cert}\n",
            plain = super::free_port(),
            key = key.display(),
            cert = cert.display(),
        );
        Self::spawn(dir, port, &listeners)
    }

    /// MediaMTX accepting plain RTMP only (publishers and readers).
    pub fn plain(dir: &Path) -> Self {
        let port = super::free_port();
        let listeners =
            format!("rtsp: no\nrtmpAddress: 127.0.0.1:{port}\nrtmpEncryption: \"no\"\n");
        Self::spawn(dir, port, &listeners)
    }

    /// MediaMTX accepting plain RTMP and RTSP over TCP (for codecs ffmpeg 5.1 cannot put in
    /// FLV, such as HEVC).
    pub fn plain_with_rtsp(dir: &Path) -> Self {
        let (port, rtsp) = (super::free_port(), super::free_port());
        let listeners = format!(
            "rtmpAddress: 127.0.0.1:{port}\nrtmpEncryption: \"no\"\n\
             rtsp: yes\nrtspTransports: [tcp]\nrtspAddress: 127.0.0.1:{rtsp}\n"
        );
        let mut server = Self::spawn(dir, port, &listeners);
        server.rtsp_port = Some(rtsp);
        server
    }

    fn spawn(dir: &Path, port: u16, listeners: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let binary = super::mediamtx::binary(super::mediamtx::VERSION);
        let config = dir.join("mediamtx.yml");
        std::fs::write(
            &config,
            format!(
                "logLevel: info\nlogDestinations: [stdout]\napi: no\nmetrics: no\npprof: no\n\
                 playback: no\nhls: no\nwebrtc: no\nsrt: no\nmoq: no\n\
                 rtmp: yes\n{listeners}paths:\n  all_others:\n"
            ),
        )
        .unwrap();
        let log = dir.join("mediamtx.log");
        let child = Command::new(binary)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("start MediaMTX");
        let up = super::wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        assert!(
            up.is_some(),
            "MediaMTX did not listen for RTMP(S) on {port}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        RtmpsServer {
            port,
            rtsp_port: None,
            log,
            child,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether a publish of `path` ever reached MediaMTX.
    pub fn saw_publish(&self, path: &str) -> bool {
        self.log()
            .contains(&format!("is publishing to path '{path}'"))
    }
}

impl Drop for RtmpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
