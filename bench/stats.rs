//! Medians, spreads and the formatting of the report's cells.

/// The p-th percentile (0..=100) of `values`, linearly interpolated; NaN when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = (p / 100.0) * (v.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn summary(values: &[f64]) -> Summary {
    Summary {
        n: values.iter().filter(|x| x.is_finite()).count(),
        min: percentile(values, 0.0),
        p10: percentile(values, 10.0),
        p50: percentile(values, 50.0),
        p90: percentile(values, 90.0),
        p99: percentile(values, 99.0),
        max: percentile(values, 100.0),
    }
}

/// Seconds as milliseconds, e.g. "42.1 ms".
pub fn ms(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "–".into();
    }
    let v = seconds * 1000.0;
    if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 100.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// Seconds, e.g. "1.23 s".
pub fn secs(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "–".into();
    }
    format!("{seconds:.2} s")
}

/// `a / b` as "0.42×", or "–" (also when `b` is not positive: a baseline's cost measured
/// as zero or below, i.e. within the noise).
pub fn ratio(a: f64, b: f64) -> String {
    if !a.is_finite() || !b.is_finite() || b <= 0.0 {
        return "–".into();
    }
    let r = a / b;
    if r < 0.1 {
        format!("{r:.3}×")
    } else if r < 10.0 {
        format!("{r:.2}×")
    } else {
        format!("{r:.0}×")
    }
}

/// A percentage of one core, e.g. "0.71 %".
pub fn pct(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v.abs() < 10.0 {
        format!("{v:.2} %")
    } else {
        format!("{v:.1} %")
    }
}

/// Mebibytes from kibibytes, e.g. "18.2 MB".
pub fn mb(kib: f64) -> String {
    if !kib.is_finite() {
        return "–".into();
    }
    let v = kib / 1024.0;
    if v.abs() < 10.0 {
        format!("{v:.2} MB")
    } else {
        format!("{v:.1} MB")
    }
}

/// A Markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", header.join(" | "));
    out.push_str(&format!(
        "|{}\n",
        header.iter().map(|_| "---|").collect::<String>()
    ));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}
