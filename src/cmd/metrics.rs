//! `neustream metrics`: ExecStart of neustream-metrics.service. Serves `GET /metrics` in the
//! Prometheus text format on the socket systemd passes (neustream-metrics.socket), or on
//! `--listen`; `--once` prints one scrape. Each scrape reads the relays' state files and asks
//! systemd for their units' accounting; what is kept is the sum of the hooks' reports
//! (datagrams on the second socket systemd passes, `crate::hook_report`).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use tracing::{info, warn};

use crate::cli::MetricsArgs;
use crate::config;
use crate::operator::{hooks::HookTotals, http, metrics, prometheus, report};

pub fn run(args: MetricsArgs) -> anyhow::Result<()> {
    let args = Rc::new(args);
    // systemd's last complaint: logged when it changes, not at every scrape.
    let complaint: Rc<RefCell<Option<String>>> = Rc::default();
    let totals: Rc<RefCell<HookTotals>> = Rc::default();
    let scrape = {
        let args = args.clone();
        let totals = totals.clone();
        move || {
            let args = args.clone();
            let complaint = complaint.clone();
            let totals = totals.clone();
            async move {
                let start = Instant::now();
                let report = report::gather(&report::Sources {
                    state_dir: &args.view.relays.relays_dir,
                    systemd: true,
                    timeout: args.view.systemd_timeout,
                })
                .await;
                let now = report.systemd_error.clone();
                if *complaint.borrow() != now {
                    match &now {
                        Some(e) => warn!("relay units' accounting not available: {e}"),
                        None => info!("systemd answers again"),
                    }
                    complaint.replace(now);
                }
                let mut text =
                    metrics::render(&report, args.stream_label, start.elapsed().as_secs_f64());
                text.push_str(&prometheus::encode(&totals.borrow().families()));
                text
            }
        }
    };
    let rt = super::runtime()?;
    if args.once {
        print!("{}", rt.block_on(scrape()));
        return Ok(());
    }
    let passed = config::passed_sockets();
    let activated = passed.listener.is_some();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        match passed.datagram {
            Some(socket) => {
                let socket = tokio_socket(socket)?;
                tokio::task::spawn_local(receive_reports(socket, totals));
            }
            None if activated => warn!(
                "no hook report socket from systemd: hook runs and Control Plane requests are \
                 not counted (neustream-metrics.socket lacks ListenDatagram=)"
            ),
            None => {}
        }
        let listener = http::listener(passed.listener, args.listen)
            .with_context(|| format!("failed to listen on {} for metrics", args.listen))?;
        let addr = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        info!(
            "serving GET /metrics on {addr}{}",
            if activated {
                " (socket from systemd)"
            } else {
                ""
            }
        );
        http::serve(listener, scrape).await;
        Ok(())
    })
}

fn tokio_socket(
    socket: std::os::unix::net::UnixDatagram,
) -> anyhow::Result<tokio::net::UnixDatagram> {
    socket.set_nonblocking(true)?;
    Ok(tokio::net::UnixDatagram::from_std(socket)?)
}

/// Sums every report that arrives, for the life of the exporter.
async fn receive_reports(socket: tokio::net::UnixDatagram, totals: Rc<RefCell<HookTotals>>) {
    let mut buf = vec![0u8; crate::hook_report::MAX_REPORT + 1];
    loop {
        match socket.recv(&mut buf).await {
            Ok(n) => totals.borrow_mut().add(&buf[..n]),
            Err(e) => {
                warn!("hook reports: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}
