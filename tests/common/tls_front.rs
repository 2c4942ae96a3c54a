//! RTMPS in front of a plain RTMP server, the way platforms terminate it: nginx's `stream`
//! module (Debian: libnginx-mod-stream) as a TLS terminator on 127.0.0.1, in the same nginx as
//! the RTMP server it fronts (one worker for both, stopped with it), and the reverse, a local
//! plain-to-TLS tunnel for a client that cannot speak RTMPS itself (nginx-rtmp's `push`).
//! Certificates: [`super::rtmps::make_certs`].

use std::path::Path;
use std::process::{Command, Stdio};

pub const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Fails naming the package when nginx's `stream` module is missing.
pub fn require_stream_module() {
    assert!(
        Path::new(STREAM_MODULE).exists(),
        "{STREAM_MODULE} missing: apt-get install libnginx-mod-stream"
    );
}

/// The `load_module` line for the top of an nginx.conf.
pub fn load_module() -> String {
    require_stream_module();
    format!("load_module {STREAM_MODULE};\n")
}

/// A `server` for nginx's `stream {}` block: TLS on 127.0.0.1:`listen` with `cert`/`key`,
/// decrypted bytes to the plain server on 127.0.0.1:`upstream`. Each client connection is one
/// accepted TLS socket (whose counters are the bytes on the wire, records included) and one
/// plain connection to the upstream.
pub fn terminator(listen: u16, upstream: u16, cert: &Path, key: &Path) -> String {
    format!(
        "server {{ listen 127.0.0.1:{listen} ssl; ssl_certificate {cert}; \
         ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3; \
         proxy_pass 127.0.0.1:{upstream}; proxy_connect_timeout 5s; }}\n",
        cert = cert.display(),
        key = key.display(),
    )
}

/// A `server` for nginx's `stream {}` block: plain on 127.0.0.1:`listen`, each connection
/// carried over TLS to 127.0.0.1:`upstream` (a [`terminator`]). The upstream's certificate is
/// not verified: both ends are the harness's own.
pub fn tunnel(listen: u16, upstream: u16) -> String {
    format!(
        "server {{ listen 127.0.0.1:{listen}; proxy_pass 127.0.0.1:{upstream}; \
         proxy_ssl on; proxy_ssl_protocols TLSv1.2 TLSv1.3; proxy_connect_timeout 5s; }}\n"
    )
}

/// SHA-256 of a PEM certificate's DER, lowercase hex without colons: what MediaMTX's
/// `sourceFingerprint` / `destFingerprint` take to trust a self-signed server.
pub fn fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed (Debian: openssl)");
    assert!(
        out.status.success(),
        "openssl x509 -fingerprint {}: {}",
        cert.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .replace(':', "")
        .to_lowercase()
}
