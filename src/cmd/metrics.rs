//! `neustream metrics`: ExecStart of neustream-metrics.service. Serves `GET /metrics` in the
//! Prometheus text format on the socket systemd passes (neustream-metrics.socket), or on
//! `--listen`; `--once` prints one scrape. Each scrape reads the relays' state files and asks
//! systemd for their units' accounting; nothing is kept between scrapes.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use anyhow::Context;
use tracing::{info, warn};

use crate::cli::MetricsArgs;
use crate::config;
use crate::operator::{http, metrics, report};

pub fn run(args: MetricsArgs) -> anyhow::Result<()> {
    let args = Rc::new(args);
    // systemd's last complaint: logged when it changes, not at every scrape.
    let complaint: Rc<RefCell<Option<String>>> = Rc::default();
    let scrape = {
        let args = args.clone();
        move || {
            let args = args.clone();
            let complaint = complaint.clone();
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
                metrics::render(&report, args.stream_label, start.elapsed().as_secs_f64())
            }
        }
    };
    let rt = super::runtime()?;
    if args.once {
        print!("{}", rt.block_on(scrape()));
        return Ok(());
    }
    let passed = config::passed_listener();
    let activated = passed.is_some();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = http::listener(passed, args.listen)
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
