//! `sagert chat`: a quick interactive try of any model.
//!
//! Reads one user message per line from standard input and prints each answer.
//! `/reset` starts the conversation again; `/exit` or end of input stops.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use sagert_backend::{ChatBackend, ChatMessage, ChatRequest, ModelRole, SamplingParams};
use sagert_config::{EndpointConfig, EndpointKind, Overrides};

use crate::backends::{embedded_backend, role_backend};
use crate::cli::ChatArgs;
use crate::cmd::{load_config, runtime};

pub(crate) fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let backend: Arc<dyn ChatBackend> = match &args.config {
        Some(path) => {
            let loaded = load_config(path, &Overrides::default())?;
            let role: ModelRole = args.role.parse()?;
            role_backend(&loaded.config, role)?
        }
        None => {
            let is_file = args.model.ends_with(".gguf") || Path::new(&args.model).is_file();
            let ep = EndpointConfig {
                kind: EndpointKind::Embedded,
                model_path: is_file.then(|| args.model.clone().into()),
                threads: args.threads,
                concurrency: 1,
                ..EndpointConfig::default()
            };
            embedded_backend("chat", &ep, &args.model)?
        }
    };
    // One runtime for the whole conversation: HTTP connections live on it.
    let rt = runtime()?;
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("chatting with {} (/reset to start again, /exit or Ctrl-D to stop)", backend.model_id());
    }
    let fresh = || args.system.iter().map(|s| ChatMessage::system(s.clone())).collect::<Vec<_>>();
    let mut history = fresh();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    loop {
        if interactive {
            eprint!("> ");
        }
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim();
        match line {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                history = fresh();
                continue;
            }
            _ => {}
        }
        history.push(ChatMessage::user(line));
        let mut request = ChatRequest::new(history.clone());
        request.params = SamplingParams {
            temperature: Some(args.temperature),
            max_tokens: Some(args.max_tokens),
            seed: Some(args.seed),
            ..SamplingParams::default()
        };
        let response = rt.block_on(backend.chat(&request))?;
        let answer = response.text().to_string();
        writeln!(stdout, "{answer}")?;
        stdout.flush()?;
        history.push(ChatMessage::assistant(answer));
    }
    Ok(ExitCode::SUCCESS)
}
