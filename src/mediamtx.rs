//! MediaMTX's Control API (v3): disconnecting a publisher we refused, which paths have a
//! publisher now, and what a path's publisher sends.

use std::collections::HashMap;
use std::time::Duration;
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum MediaMtxError {
    #[error("MediaMTX API URL '{0}' is not an http:// URL")]
    BadUrl(String),
    #[error("cannot kick a publisher of source type '{0}' (MTX_SOURCE_TYPE); expected rtmpConn, rtmpsConn, rtspSession, rtspsSession, srtConn or webRTCSession")]
    SourceType(String),
    #[error("cannot kick the publisher: MTX_SOURCE_ID is empty")]
    NoSourceId,
    #[error("POST {url} failed: {detail}")]
    Request { url: String, detail: String },
    #[error("GET {url} failed: {detail}")]
    List { url: String, detail: String },
}

/// Pages of `/v3/paths/list` read at most (of [`PAGE_SIZE`] paths each).
const MAX_PAGES: u32 = 100;
const PAGE_SIZE: u32 = 1000;

/// `{api}/v3/{segments...}` for an http(s) API URL.
fn api_endpoint<'a>(
    api_url: &str,
    segments: impl IntoIterator<Item = &'a str>,
) -> Result<Url, MediaMtxError> {
    let mut url = Url::parse(api_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| MediaMtxError::BadUrl(api_url.into()))?;
    url.path_segments_mut()
        .map_err(|_| MediaMtxError::BadUrl(api_url.into()))?
        .pop_if_empty()
        .push("v3")
        .extend(segments);
    Ok(url)
}

fn client(failed: &impl Fn(String) -> MediaMtxError) -> Result<reqwest::Client, MediaMtxError> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .build()
        .map_err(|e| failed(e.to_string()))
}

/// `GET url` answered with success and JSON of type `T`; any other outcome is `failed(why)`.
async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: &Url,
    failed: impl Fn(String) -> MediaMtxError,
) -> Result<T, MediaMtxError> {
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(failed(status.to_string()));
    }
    resp.json()
        .await
        .map_err(|e| failed(format!("malformed answer: {e}")))
}

#[derive(serde::Deserialize)]
struct PathList {
    #[serde(rename = "pageCount", default)]
    page_count: u32,
    #[serde(default)]
    items: Vec<ApiPath>,
}

#[derive(serde::Deserialize)]
struct ApiPath {
    name: String,
    #[serde(default)]
    source: Option<ApiSource>,
}

#[derive(serde::Deserialize)]
struct ApiSource {
    #[serde(default)]
    id: String,
}

/// Every path that has a publisher now (`GET {api}/v3/paths/list`, all pages): path name →
/// the publisher's connection id (MTX_SOURCE_ID). A path has a publisher from the moment one
/// connects (its `source`), before it is ready: such a key counts as live.
pub async fn publishers(api_url: &str) -> Result<HashMap<String, String>, MediaMtxError> {
    let base = api_endpoint(api_url, ["paths", "list"])?;
    let client = client(&|detail| MediaMtxError::List {
        url: api_url.into(),
        detail,
    })?;
    let mut found = HashMap::new();
    let mut page = 0;
    loop {
        let mut url = base.clone();
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("itemsPerPage", &PAGE_SIZE.to_string());
        let failed = |detail: String| MediaMtxError::List {
            url: url.to_string(),
            detail,
        };
        let list: PathList = get_json(&client, &url, failed).await?;
        for path in list.items {
            if let Some(source) = path.source {
                found.insert(path.name, source.id);
            }
        }
        page += 1;
        if page >= list.page_count {
            return Ok(found);
        }
        if page >= MAX_PAGES {
            return Err(failed(format!(
                "more than {MAX_PAGES} pages of {PAGE_SIZE} paths"
            )));
        }
    }
}

#[derive(serde::Deserialize)]
struct PathTracks {
    #[serde(default)]
    tracks: Vec<String>,
}

/// The tracks of `path`'s publisher as MediaMTX names them (`GET {api}/v3/paths/get/{path}`):
/// `["H264", "MPEG-4 Audio"]`.
pub async fn tracks(api_url: &str, path: &str) -> Result<Vec<String>, MediaMtxError> {
    let url = api_endpoint(
        api_url,
        ["paths", "get"]
            .into_iter()
            .chain(path.trim_matches('/').split('/')),
    )?;
    let failed = |detail: String| MediaMtxError::List {
        url: url.to_string(),
        detail,
    };
    let path: PathTracks = get_json(&client(&failed)?, &url, failed).await?;
    Ok(path.tracks)
}

/// The Control API collection of a publisher's connection type (MTX_SOURCE_TYPE). These names
/// exist from MediaMTX 1.0 to 1.21 (1.21 adds `rtmp/conns` etc. and keeps these). RTMPS
/// connections live in their own server, so in `rtmpsconns`: `rtmpconns` answers 404 for them.
fn collection(source_type: &str) -> Option<&'static str> {
    Some(match source_type {
        "rtmpConn" => "rtmpconns",
        "rtmpsConn" => "rtmpsconns",
        "rtspSession" => "rtspsessions",
        "rtspsSession" => "rtspssessions",
        "srtConn" => "srtconns",
        "webRTCSession" => "webrtcsessions",
        _ => return None,
    })
}

/// `POST {api}/v3/{collection}/kick/{id}`: MediaMTX closes the publisher's connection.
pub async fn kick(api_url: &str, source_type: &str, source_id: &str) -> Result<(), MediaMtxError> {
    // A bad API URL is named first, then a source it cannot kick.
    let kind = collection(source_type);
    let url = api_endpoint(api_url, [kind.unwrap_or_default(), "kick", source_id])?;
    if kind.is_none() {
        return Err(MediaMtxError::SourceType(source_type.into()));
    }
    if source_id.is_empty() {
        return Err(MediaMtxError::NoSourceId);
    }
    let failed = |detail: String| MediaMtxError::Request {
        url: url.to_string(),
        detail,
    };
    let resp = client(&failed)?
        .post(url.clone())
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if resp.status().is_success() {
        Ok(())
    } else {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        Err(failed(format!(
            "{status}: {}",
            body.trim().chars().take(200).collect::<String>()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-request HTTP server on 127.0.0.1 that answers `status` with `body` (JSON) and
    /// returns the request line it got.
    fn serve(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap();
            write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        });
        (url, handle)
    }

    fn one_shot(status: u16) -> (String, std::thread::JoinHandle<String>) {
        let body = if status == 200 {
            ""
        } else {
            "{\"error\":\"connection not found\"}"
        };
        serve(status, body)
    }

    #[test]
    fn kicks_rtmp_connections() {
        let (url, server) = one_shot(200);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(kick(&url, "rtmpConn", "6f1c")).unwrap();
        assert_eq!(
            server.join().unwrap(),
            "POST /v3/rtmpconns/kick/6f1c HTTP/1.1"
        );
    }

    /// Each publisher type is kicked in its own collection: an SRT publisher (OBS's SRT output,
    /// IRL encoders) in `srtconns`, an RTMPS one in `rtmpsconns` (MediaMTX's RTMPS server is
    /// not its RTMP server: `rtmpconns` does not know its connections).
    #[test]
    fn kicks_each_source_type_in_its_collection() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (source_type, collection) in [
            ("srtConn", "srtconns"),
            ("rtmpsConn", "rtmpsconns"),
            ("rtspSession", "rtspsessions"),
            ("rtspsSession", "rtspssessions"),
            ("webRTCSession", "webrtcsessions"),
        ] {
            let (url, server) = one_shot(200);
            rt.block_on(kick(&url, source_type, "9a2b")).unwrap();
            assert_eq!(
                server.join().unwrap(),
                format!("POST /v3/{collection}/kick/9a2b HTTP/1.1"),
                "{source_type}"
            );
        }
    }

    #[test]
    fn reports_api_errors() {
        let (url, server) = one_shot(404);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(kick(&url, "srtConn", "x"))
            .unwrap_err()
            .to_string();
        server.join().unwrap();
        assert!(
            err.contains("/v3/srtconns/kick/x") && err.contains("404"),
            "{err}"
        );
    }

    /// Answers `GET /v3/paths/list` with `body` and returns the request line.
    fn serve_json(body: &'static str) -> (String, std::thread::JoinHandle<String>) {
        serve(200, body)
    }

    #[test]
    fn lists_paths_with_a_publisher() {
        // As MediaMTX 1.21 answers: one path publishing, one with only a reader waiting.
        let (url, server) = serve_json(
            r#"{"itemCount":2,"pageCount":1,"items":[
              {"name":"live/a","confName":"~^live/","ready":true,"available":true,
               "source":{"type":"rtmpConn","id":"8f1e"},"readers":[]},
              {"name":"live/b","confName":"~^live/","ready":false,"available":false,
               "source":null,"readers":[{"type":"rtmpConn","id":"x"}]}]}"#,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let found = rt.block_on(publishers(&url)).unwrap();
        assert_eq!(
            server.join().unwrap(),
            "GET /v3/paths/list?page=0&itemsPerPage=1000 HTTP/1.1"
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found["live/a"], "8f1e");
    }

    #[test]
    fn an_unreachable_or_garbled_api_is_an_error() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = rt
            .block_on(publishers(&format!("http://127.0.0.1:{port}")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/v3/paths/list"), "{err}");
        let (url, server) = serve_json("not json");
        let err = rt.block_on(publishers(&url)).unwrap_err().to_string();
        server.join().unwrap();
        assert!(err.contains("malformed answer"), "{err}");
    }

    #[test]
    fn reads_a_paths_tracks() {
        // As MediaMTX 1.21 answers for an SRT publisher with MP2 audio (abridged).
        let (url, server) = serve_json(
            r#"{"name":"live/a","confName":"~^live/","source":{"type":"srtConn","id":"7e"},
               "ready":true,"tracks":["H264","MPEG-1/2 Audio"],
               "tracks2":[{"codec":"H264","codecProps":null}],"readers":[]}"#,
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let found = rt.block_on(tracks(&url, "live/a")).unwrap();
        assert_eq!(server.join().unwrap(), "GET /v3/paths/get/live/a HTTP/1.1");
        assert_eq!(found, vec!["H264", "MPEG-1/2 Audio"]);
        let (url, server) = serve(404, r#"{"error":"path not found"}"#);
        let err = rt.block_on(tracks(&url, "live/b")).unwrap_err().to_string();
        server.join().unwrap();
        assert!(
            err.contains("/v3/paths/get/live/b") && err.contains("404"),
            "{err}"
        );
    }

    #[test]
    fn refuses_what_it_cannot_kick() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = rt
            .block_on(kick("http://127.0.0.1:9", "hlsMuxer", "x"))
            .unwrap_err();
        assert!(matches!(err, MediaMtxError::SourceType(_)));
        let err = rt
            .block_on(kick("http://127.0.0.1:9", "rtmpConn", ""))
            .unwrap_err();
        assert!(matches!(err, MediaMtxError::NoSourceId));
    }
}
