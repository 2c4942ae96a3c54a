//! The Prometheus text exposition format, version 0.0.4: what Prometheus scrapes and what
//! node_exporter's textfile collector accepts (it rejects OpenMetrics-only types). Small enough
//! to write by hand: families of `# HELP`, `# TYPE` and samples.

use std::fmt::Write;

/// `Content-Type` of a scrape answer in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: every sample of one name.
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    samples: Vec<Sample>,
}

/// Name suffix (`_bucket`, `_sum`, `_count` of a histogram; empty otherwise), labels, value.
type Sample = (&'static str, Vec<(&'static str, String)>, f64);

impl Family {
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        debug_assert!(valid_name(name), "metric name {name}");
        debug_assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    pub fn add(&mut self, labels: &[(&'static str, &str)], value: f64) {
        debug_assert!(
            self.kind != Kind::Histogram,
            "{}: use add_histogram",
            self.name
        );
        self.push("", labels, value);
    }

    /// A histogram's samples for `labels`: `buckets` are (upper bound, count of observations
    /// at most that), ascending; the `+Inf` bucket is `count`.
    pub fn add_histogram(
        &mut self,
        labels: &[(&'static str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) {
        debug_assert!(
            self.kind == Kind::Histogram,
            "{}: not a histogram",
            self.name
        );
        for (le, n) in buckets
            .iter()
            .map(|(le, n)| (format_value(*le), *n))
            .chain([("+Inf".to_string(), count)])
        {
            let mut with_le: Vec<(&'static str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.push("_bucket", &with_le, n as f64);
        }
        self.push("_sum", labels, sum);
        self.push("_count", labels, count as f64);
    }

    fn push(&mut self, suffix: &'static str, labels: &[(&'static str, &str)], value: f64) {
        self.samples.push((
            suffix,
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        ));
    }
}

/// Renders the families in order; a family without samples is left out (a `# TYPE` line
/// without samples is legal, but says nothing).
pub fn encode(families: &[Family]) -> String {
    let mut out = String::with_capacity(4096);
    for f in families.iter().filter(|f| !f.samples.is_empty()) {
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, escape_help(f.help));
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for (suffix, labels, value) in &f.samples {
            out.push_str(f.name);
            out.push_str(suffix);
            if !labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape_label(v));
                }
                out.push('}');
            }
            out.push(' ');
            out.push_str(&format_value(*value));
            out.push('\n');
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Integers exactly (no exponent below 2^53), others as Rust's shortest round-trip form.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 9.007_199_254_740_992e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format() {
        let mut up = Family::new("x_up", Kind::Gauge, "Whether x is up.\nSecond line \\.");
        up.add(&[("stream", "a\"b\\c\nd"), ("index", "0")], 1.0);
        up.add(&[], 0.5);
        let mut bytes = Family::new("x_bytes_total", Kind::Counter, "Bytes.");
        bytes.add(&[("i", "1")], 12345678901.0);
        let empty = Family::new("x_none", Kind::Gauge, "Nothing.");
        assert_eq!(
            encode(&[up, empty, bytes]),
            "# HELP x_up Whether x is up.\\nSecond line \\\\.\n\
             # TYPE x_up gauge\n\
             x_up{stream=\"a\\\"b\\\\c\\nd\",index=\"0\"} 1\n\
             x_up 0.5\n\
             # HELP x_bytes_total Bytes.\n\
             # TYPE x_bytes_total counter\n\
             x_bytes_total{i=\"1\"} 12345678901\n"
        );
    }

    #[test]
    fn histograms_have_buckets_sum_and_count() {
        let mut h = Family::new("x_seconds", Kind::Histogram, "Durations.");
        h.add_histogram(&[("e", "auth")], &[(0.1, 2), (1.0, 3)], 1.25, 4);
        assert_eq!(
            encode(&[h]),
            "# HELP x_seconds Durations.\n\
             # TYPE x_seconds histogram\n\
             x_seconds_bucket{e=\"auth\",le=\"0.1\"} 2\n\
             x_seconds_bucket{e=\"auth\",le=\"1\"} 3\n\
             x_seconds_bucket{e=\"auth\",le=\"+Inf\"} 4\n\
             x_seconds_sum{e=\"auth\"} 1.25\n\
             x_seconds_count{e=\"auth\"} 4\n"
        );
    }

    #[test]
    fn values() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e300), "1e300");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("neustream_relays"));
        assert!(!valid_name("9x"));
        assert!(!valid_name("a-b"));
    }
}
