//! The `cmdop` binary: parse arguments, set up logging, run, map the result to an exit code.

use clap::Parser;
use cmdop::cli::{self, CliError, args::{Cli, LogFormat}};
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let args = Cli::parse();
    cmdop::dial::install_crypto();
    init_logging(args.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cmdop: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(cli::run(args)) {
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
