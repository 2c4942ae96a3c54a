//! `neustream`: MediaMTX hooks and the per-stream relay of the Neustream media server.

mod authority;
mod cli;
mod cmd;
mod config;
mod control_plane;
mod destination;
mod envfile;
mod hook_report;
mod logging;
mod mediamtx;
mod operator;
mod platforms;
mod private_file;
mod relay;
mod rtmp;
mod sessions;
mod stream_key;
mod streamdir;
mod streams_file;
mod systemd;

use std::process::ExitCode;

fn main() -> ExitCode {
    // Settings file first: clap reads the variables it defines from the environment.
    let settings_file = config::load_settings_file();
    let cli = <cli::Cli as clap::Parser>::parse();
    logging::init(cli.log_level, cli.command.log_identifier());
    let hook = cli.command.hook_name();
    let report = |result| {
        if let Some(hook) = hook {
            hook_report::send(std::path::Path::new(hook_report::SOCKET), hook, result);
        }
    };
    if let Err(err) = settings_file {
        tracing::error!("{err:#}");
        report("error");
        return ExitCode::from(cmd::EXIT_CONFIG);
    }
    match cmd::dispatch(cli) {
        Ok(()) => {
            report("ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            // The one place that reports a failure: the whole chain, once.
            tracing::error!("{err:#}");
            report(if cmd::is_refusal(&err) {
                "refused"
            } else {
                "error"
            });
            ExitCode::from(cmd::exit_code(&err))
        }
    }
}
