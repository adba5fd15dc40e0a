//! The `cmdop` binary: parse arguments, set up logging, run, map the result to an exit code.

use clap::Parser;
use cmdop::app::{
    self,
    args::{Cli, Command, LogFormat},
};
use cmdop::cli::CliError;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `cmdop server` and `cmdop agent` run on one thread each (a current-thread runtime). Their
/// work is I/O and framing: a keystroke crosses a socket, a few tasks and another socket. On
/// the multi-thread runtime an I/O event that the worker parked in the driver receives goes
/// to the shared queue and wakes the other worker (a futex wake, and an IPI on a VM) for
/// every frame; on one thread the woken task runs right there. Measured: about 30 us less echo
/// latency and a quarter less server CPU per keystroke (docs/performance.md). CPU-heavy work
/// (argon2) runs on the blocking pool, SQLite on its own thread. Everything else (the CLI,
/// quickstart) keeps the default runtime.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Server(_) | Command::Agent(_) => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        _ => tokio::runtime::Runtime::new(),
    }
}

fn main() {
    let args = Cli::parse();
    cmdop::sys::dial::install_crypto();
    init_logging(args.log_format);
    let runtime = match runtime_for(&args.command) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cmdop: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(app::run(args)) {
        Ok(code) => code,
        Err(e) => match e.downcast_ref::<CliError>() {
            Some(c) => {
                eprintln!("cmdop: {c}");
                c.exit_code()
            }
            None => {
                eprintln!("cmdop: {e:#}");
                1
            }
        },
    };
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    std::process::exit(code);
}
