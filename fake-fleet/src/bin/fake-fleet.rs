//! The `fake-fleet` binary: serves a scenario file of fake machines until Ctrl-C / SIGTERM.
//!
//! Usage: `fake-fleet --scenario FILE.json --listen 127.0.0.1:PORT [--speed N]`
//! (`--flag value` or `--flag=value`). The machine URLs are printed on stdout at start-up.

use std::net::SocketAddr;
use std::process::ExitCode;

use fake_fleet::{Fleet, FleetClock, Scenario};

const USAGE: &str = "usage: fake-fleet --scenario FILE.json --listen IP:PORT [--speed N]

  --scenario FILE   scenario file (JSON, see fake-fleet/scenarios/demo.json)
  --listen IP:PORT  address of the shared HTTP listener (port 0 = ephemeral)
  --speed N         scenario seconds per real second (default 1.0, must be > 0)
  --help            show this help";

/// Parsed command line.
struct Args {
    scenario: String,
    listen: SocketAddr,
    speed: f64,
}

/// Parses the command line; `Ok(None)` means `--help` was asked for.
fn parse_args(raw: impl IntoIterator<Item = String>) -> Result<Option<Args>, String> {
    let mut scenario = None;
    let mut listen = None;
    let mut speed = None;
    let mut it = raw.into_iter();
    while let Some(arg) = it.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| -> Result<String, String> {
            match inline.clone().or_else(|| it.next()) {
                Some(v) => Ok(v),
                None => Err(format!("{flag} needs a value")),
            }
        };
        match flag.as_str() {
            "--scenario" => scenario = Some(value("--scenario")?),
            "--listen" => {
                let v = value("--listen")?;
                let addr = v
                    .parse::<SocketAddr>()
                    .map_err(|e| format!("--listen: {v:?} is not an IP:PORT address ({e})"))?;
                listen = Some(addr);
            }
            "--speed" => {
                let v = value("--speed")?;
                let s = v
                    .parse::<f64>()
                    .map_err(|e| format!("--speed: {v:?} is not a number ({e})"))?;
                if !(s.is_finite() && s > 0.0) {
                    return Err(format!("--speed: {v:?} must be a positive finite number"));
                }
                speed = Some(s);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Args {
        scenario: scenario.ok_or("--scenario is required")?,
        listen: listen.ok_or("--listen is required")?,
        speed: speed.unwrap_or(1.0),
    }))
}

/// Resolves on Ctrl-C or (on Unix) SIGTERM.
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fake-fleet: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let scenario = match Scenario::from_file(&args.scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake-fleet: --scenario {}: {e}", args.scenario);
            return ExitCode::from(2);
        }
    };
    let fleet = match Fleet::start(scenario, args.listen, FleetClock::real(args.speed)).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-fleet: cannot start: {e:#}");
            return ExitCode::FAILURE;
        }
    };

    println!(
        "fake-fleet listening on http://{} (speed {}x); machines:",
        fleet.addr(),
        args.speed
    );
    for name in fleet.names() {
        println!("  {name}\t{}", fleet.url_of(&name));
    }

    terminated().await;
    println!("fake-fleet: shutting down");
    fleet.shutdown().await;
    ExitCode::SUCCESS
}
