//! One file per subcommand, each with one `run`.

mod hook;
mod metrics;
mod ready;
mod reconcile;
mod refresh;
mod relay;
mod relay_reload;
mod status;
mod streams;
mod unpublish;

use clap::CommandFactory;

use crate::cli::{Cli, Command};

/// Exit status for settings or stream descriptions that no retry can fix (EX_CONFIG);
/// `RestartPreventExitStatus=78` in the relay unit.
pub const EXIT_CONFIG: u8 = 78;

/// A configuration problem: reported with [`EXIT_CONFIG`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ready(args) => ready::run(args),
        Command::Unpublish(args) => unpublish::run(args),
        Command::Reconcile(args) => reconcile::run(args),
        Command::Relay(args) => relay::run(args),
        Command::Status(args) => status::run(args),
        Command::Metrics(args) => metrics::run(args),
        Command::RelayReload(args) => relay_reload::run(args),
        Command::Refresh(args) => refresh::run(args),
        Command::Streams(command) => streams::run(command),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "neustream",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Manpage => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
    }
}

pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<ConfigError>()) {
        EXIT_CONFIG
    } else if let Some(status::Verdict { code, .. }) = err.downcast_ref() {
        *code
    } else {
        1
    }
}

/// A key refused for good (401/403, not in the streams file), as opposed to a failure.
pub fn is_refusal(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<crate::authority::AuthorityError>()
            .is_some_and(|a| a.is_refusal())
    })
}

/// The single-threaded runtime the subcommands run on (a hook does a few calls in sequence).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Blocking threads resolve host names (and read files): a few are plenty, and the relay's
    // unit has a TasksMax= (see neustream-relay@.service).
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()?)
}
