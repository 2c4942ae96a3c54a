//! `neustream unpublish`: MediaMTX's runOnNotReady (runOnUnavailable) hook.

use super::hook::Hook;
use crate::cli::HookArgs;

pub fn run(args: HookArgs) -> anyhow::Result<()> {
    let hook = Hook::new(args)?;
    super::runtime()?.block_on(hook.end_session(false, "unpublish"))
}
