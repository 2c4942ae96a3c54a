//! `neustream unpublish`: MediaMTX's runOnNotReady (runOnUnavailable) hook. With a reconnect
//! grace it waits for the publisher to come back before it ends the stream (see
//! `Hook::unpublish`).

use super::hook::Hook;
use crate::cli::HookArgs;

pub fn run(args: HookArgs) -> anyhow::Result<()> {
    let hook = Hook::new(args)?;
    super::runtime()?.block_on(hook.unpublish())
}
