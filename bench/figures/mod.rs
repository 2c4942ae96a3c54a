//! One module per figure; each runs its measurements and returns a Markdown section.

pub mod cost;
pub mod drop;
pub mod join;
pub mod latency;
pub mod recovery;
pub mod scale;
pub mod scrape;
pub mod storm;
pub mod ttff;
