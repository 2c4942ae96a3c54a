//! Figure 6, recovery: destination 2's server stops for `--outage` seconds and comes back on
//! the same port. Measured: the time from its return (the first TCP connection it accepts,
//! polled every 2 ms from its start) to the first video keyframe recorded there (10 ms
//! polling), and the worst wall-clock gap between video frames at destinations 0 and 1
//! from the drop to the end of the recovery (a destination that stops receiving shows the gap
//! up to the end of the observation, 15 s after the return at most).

use std::time::Duration;

use crate::common::arrivals::{now, worst_gap};
use crate::lab::Lab;
use crate::layouts::{Layout, Streams};
use crate::rtmp::destination_apps;
use crate::stats::{percentile, secs, table};
use crate::{progress, sleep, Opts};

/// How long after the return a destination may take to receive again before it counts as
/// not recovered.
const RESUME_LIMIT: f64 = 15.0;

struct Outage {
    resume: f64,
    others_gap: f64,
}

pub fn run(opts: &Opts) -> String {
    let layouts = Layout::selected(opts);
    let mut lab = Lab::new(
        "recovery",
        Duration::from_millis(10),
        layouts.contains(&Layout::Push),
    );
    let mut rows = vec![];
    let mut ours_ok = None;
    for (li, &layout) in layouts.iter().enumerate() {
        progress!("recovery: {}", layout.name());
        let streams = Streams::start(&lab, layout, 1, "rec", &format!("r{li}"));
        let key = streams.keys[0].clone();
        for i in 0..2 {
            lab.watcher
                .watch(&format!("{key}-{i}"), &lab.dests[i].recording("rec", &key));
        }
        sleep(3.0);
        let mut outages = vec![];
        // The seed never reconnects: one outage shows it.
        let runs = if layout == Layout::Seed {
            1
        } else {
            opts.recovery_runs
        };
        for r in 0..runs {
            crate::check_interrupted();
            let dropped = now();
            lab.dests[2].stop();
            sleep(opts.outage);
            let dir = lab.dir.join(format!("dest2-back-{li}-{r}"));
            // The same server (ports, chunk size, TLS terminator) back.
            let back = lab.dests[2].again(&dir, &destination_apps(&dir));
            let returned = back.listening_at;
            let name = format!("{key}-back{r}");
            lab.watcher.watch(&name, &back.recording("rec", &key));
            lab.dests[2] = back;
            let first = crate::common::wait_for(
                Duration::from_secs_f64(RESUME_LIMIT),
                Duration::from_millis(20),
                || lab.watcher.first_key(&name),
            );
            let end = first.unwrap_or(now()).max(returned + 1.0);
            sleep(end - now());
            let others_gap = (0..2)
                .map(|i| worst_gap(&lab.watcher.frames(&format!("{key}-{i}")), dropped, end))
                .fold(0.0, f64::max);
            let resume = first.map_or(f64::INFINITY, |f| f - returned);
            progress!(
                "recovery: {} outage {r}: back after {}, others' worst gap {}",
                layout.name(),
                secs(resume),
                secs(others_gap)
            );
            outages.push(Outage { resume, others_gap });
            lab.watcher.forget(&name);
            sleep(3.0);
        }
        for i in 0..2 {
            lab.watcher.forget(&format!("{key}-{i}"));
        }
        streams.stop(&lab);
        let resume: Vec<f64> = outages.iter().map(|o| o.resume).collect();
        let gaps: Vec<f64> = outages.iter().map(|o| o.others_gap).collect();
        let never = resume.iter().filter(|r| !r.is_finite()).count();
        let worst_gap = gaps.iter().copied().fold(0.0, f64::max);
        if layout == Layout::Neustream {
            ours_ok = Some((
                percentile(&resume, 100.0) < 0.5 && never == 0,
                worst_gap <= 0.5,
            ));
        }
        let finite: Vec<f64> = resume.iter().copied().filter(|r| r.is_finite()).collect();
        rows.push(vec![
            layout.name().into(),
            outages.len().to_string(),
            if finite.is_empty() {
                format!("never (> {RESUME_LIMIT:.0} s)")
            } else {
                secs(percentile(&resume, 50.0))
            },
            if finite.is_empty() {
                "–".into()
            } else {
                format!(
                    "{}–{}{}",
                    secs(percentile(&finite, 0.0)),
                    secs(percentile(&finite, 100.0)),
                    if never > 0 {
                        format!(" ({never} never)")
                    } else {
                        String::new()
                    }
                )
            },
            if worst_gap < RESUME_LIMIT {
                secs(worst_gap)
            } else {
                "all dropped: no frames until the end".into()
            },
        ]);
    }
    drop(lab);
    let verdict = match ours_ok {
        Some((resume, gap)) => format!(
            "back < 0.5 s after accepting again (every outage): **{}**; others' gap ≤ 0.5 s: **{}**",
            if resume { "met" } else { "missed" },
            if gap { "met" } else { "missed" }
        ),
        None => "not run".into(),
    };
    format!(
        "## 6. Recovery\n\n\
         Destination 2 stops for {:.0} s and returns on the same port; time from its accepting \
         connections again to its first video keyframe, and the worst gap between video frames at destinations 0 and 1 \
         from the drop until destination 2 receives again (wall clock, 10 ms polling).\n\n{}\n\
         Goals: {verdict}.\n",
        opts.outage,
        table(
            &[
                "relay",
                "outages",
                "back after (p50)",
                "min–max",
                "others' worst gap"
            ],
            &rows
        )
    )
}
