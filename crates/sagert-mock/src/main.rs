//! `sagert-mock`: serves the mock OpenAI-compatible API on 127.0.0.1 until
//! killed, for benchmarks and manual testing.
//!
//! Arguments are parsed by hand to keep this test tool's dependencies to
//! tokio and serde; errors are plain strings because the only thing to do
//! with them is print them.

use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use sagert_mock::{MockConfig, MockServer, Reply};

const USAGE: &str = "\
usage: sagert-mock [--port N] [--latency-ms N] [--reply SUBSTRING=TEXT ...] [--model NAME] [--threads N]

Serves a mock OpenAI-compatible API (POST /v1/chat/completions, GET /v1/models)
on 127.0.0.1 until killed, printing `listening on http://127.0.0.1:PORT/v1`.

options:
  --port N            port to bind on 127.0.0.1 (default 0: any free port)
  --latency-ms N      delay before every chat answer, in milliseconds (default 0)
  --reply SUB=TEXT    answer TEXT when the last user message contains SUB;
                      repeatable, the first match wins (default: echo the message)
  --model NAME        model name in answers (default mock-model)
  --threads N         tokio worker threads (default 2)
  -h, --help          print this help
";

#[derive(Debug, PartialEq)]
struct Args {
    port: u16,
    threads: usize,
    config: MockConfig,
}

#[derive(Debug, PartialEq)]
enum Command {
    Serve(Args),
    Help,
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Serve(args)) => match run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("sagert-mock: {error}");
                ExitCode::FAILURE
            }
        },
        Err(message) => {
            eprintln!("sagert-mock: {message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> io::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(args.threads).enable_all().build()?;
    runtime.block_on(async {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
        let server = MockServer::start_on(addr, args.config).await?;
        let mut stdout = io::stdout();
        writeln!(stdout, "listening on {}", server.base_url())?;
        stdout.flush()?;
        tokio::signal::ctrl_c().await
    })
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    // Benchmarks run for long: no request log.
    let mut config = MockConfig { log_requests: false, ..MockConfig::default() };
    let mut port = 0;
    let mut threads = 2;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let mut value = || match inline.clone() {
            Some(value) => Ok(value),
            None => args.next().ok_or_else(|| format!("{flag} needs a value")),
        };
        match flag.as_str() {
            "--port" => port = number(&flag, &value()?)?,
            "--latency-ms" => config.latency = Duration::from_millis(number(&flag, &value()?)?),
            "--threads" => {
                threads = number(&flag, &value()?)?;
                if threads == 0 {
                    return Err("--threads must be at least 1".into());
                }
            }
            "--model" => config.model = value()?,
            "--reply" => {
                let value = value()?;
                let (when, content) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--reply wants SUBSTRING=TEXT, got {value:?}"))?;
                config.replies.push(Reply::new(when, content));
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok(Command::Serve(Args { port, threads, config }))
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value.parse().map_err(|_| format!("{flag} wants a number, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|arg| arg.to_string()))
    }

    #[test]
    fn parses_every_flag_in_both_spellings() {
        let Command::Serve(args) = parse(&[
            "--port",
            "8080",
            "--latency-ms=50",
            "--reply",
            "cap=Paris=France",
            "--reply=x=y",
            "--threads",
            "4",
        ])
        .unwrap() else {
            panic!("expected serve");
        };
        assert_eq!(args.port, 8080);
        assert_eq!(args.threads, 4);
        assert_eq!(args.config.latency, Duration::from_millis(50));
        assert_eq!(args.config.replies, vec![Reply::new("cap", "Paris=France"), Reply::new("x", "y")]);
        assert!(!args.config.log_requests);
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(parse(&["--port", "1", "--help"]), Ok(Command::Help));
        assert!(parse(&["--port"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--port", "x"]).unwrap_err().contains("wants a number"));
        assert!(parse(&["--reply", "novalue"]).unwrap_err().contains("SUBSTRING=TEXT"));
        assert!(parse(&["--threads", "0"]).unwrap_err().contains("at least 1"));
        assert!(parse(&["--bogus"]).unwrap_err().contains("unknown argument"));
    }
}
