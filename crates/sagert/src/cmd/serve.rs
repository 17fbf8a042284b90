//! `sagert serve`: an OpenAI-compatible HTTP server over the embedded engine
//! (`sagert-serve`).
//!
//! Serves the embedded endpoints of a run configuration, or one model: a known
//! one (the default SmolLM2, fetched on first use) or a GGUF file. The first
//! line on standard output is `listening on http://ADDR`, printed once the
//! models are loaded and the port is bound, so that scripts can read the port
//! of `--port 0`. Ctrl-C or SIGTERM stops taking connections, lets the requests
//! in flight finish (for at most [`GRACE`]) and exits 0.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sagert_config::{EndpointConfig, EndpointKind, Overrides, RunConfig};
use sagert_llama::LlamaBackend;

use crate::backends::embedded_backend;
use crate::cli::ServeArgs;
use crate::cmd::{load_config, runtime};

/// How long requests in flight may run on after a shutdown signal.
const GRACE: Duration = Duration::from_secs(30);

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let models = match &args.config {
        Some(path) => {
            let loaded = load_config(path, &Overrides::default())?;
            config_models(&loaded.config, &args)?
        }
        None => vec![single_model(&args)?],
    };
    for (id, backend) in &models {
        let o = backend.options();
        eprintln!(
            "serving {id} from {} ({} threads, {} sequences of {} tokens)",
            backend.path().display(),
            o.threads,
            o.max_sequences,
            o.context_per_sequence
        );
    }
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let addr = listener.local_addr()?;
        // Listen for signals before saying we listen: a script may stop us at once.
        let stop = shutdown_signal()?;
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
        let (signalled, signal) = tokio::sync::oneshot::channel::<()>();
        let server = sagert_serve::serve(listener, models, async move {
            stop.await;
            eprintln!("shutting down: finishing the requests in flight");
            let _ = signalled.send(());
        });
        let grace = async move {
            if signal.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(GRACE).await;
        };
        tokio::select! {
            served = server => served?,
            () = grace => eprintln!("requests still in flight after {GRACE:?}; stopping"),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// The one model of a run without a configuration: `--model-path`, or the known
/// model `--model`, loaded the way `sagert chat` loads it.
fn single_model(args: &ServeArgs) -> anyhow::Result<(String, Arc<LlamaBackend>)> {
    let (ep_model, id) = match &args.model_path {
        Some(path) => {
            let stem = Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned());
            (None, args.model_id.clone().or(stem).unwrap_or_else(|| "model".into()))
        }
        None => (Some(args.model.clone()), args.model_id.clone().unwrap_or_else(|| args.model.clone())),
    };
    let mut ep = EndpointConfig {
        kind: EndpointKind::Embedded,
        model: ep_model,
        model_path: args.model_path.clone(),
        ..EndpointConfig::default()
    };
    apply_overrides(&mut ep, args);
    Ok((id.clone(), embedded_backend("serve", &ep, &id)?))
}

/// The embedded endpoints of a configuration (or the one `--endpoint` names),
/// each under the model id of the first role that uses it (its `model`, or
/// its name, when no role does).
fn config_models(config: &RunConfig, args: &ServeArgs) -> anyhow::Result<Vec<(String, Arc<LlamaBackend>)>> {
    let mut picked = Vec::new();
    for (name, ep) in &config.endpoints {
        if args.endpoint.as_ref().is_some_and(|e| e != name) {
            continue;
        }
        if ep.kind != EndpointKind::Embedded {
            if args.endpoint.is_some() {
                bail!("endpoint `{name}` is not embedded (kind = \"embedded\"); only embedded endpoints are served");
            }
            continue;
        }
        picked.push((name, ep));
    }
    if picked.is_empty() {
        match &args.endpoint {
            Some(e) => bail!("the configuration has no endpoint named `{e}`"),
            None => bail!("the configuration has no embedded endpoint (kind = \"embedded\") to serve"),
        }
    }
    if args.model_id.is_some() && picked.len() > 1 {
        bail!("--model-id names one model, but the configuration has {} embedded endpoints; pick one with --endpoint", picked.len());
    }
    let mut models = Vec::with_capacity(picked.len());
    for (name, ep) in picked {
        let role_model =
            config.roles.iter().find(|(_, rc)| rc.endpoints.contains(name)).map(|(_, rc)| rc.model.clone());
        let id =
            args.model_id.clone().or(role_model).or_else(|| ep.model.clone()).unwrap_or_else(|| name.clone());
        let mut ep = ep.clone();
        apply_overrides(&mut ep, args);
        models.push((id.clone(), embedded_backend(name, &ep, &id)?));
    }
    Ok(models)
}

fn apply_overrides(ep: &mut EndpointConfig, args: &ServeArgs) {
    if let Some(t) = args.threads {
        ep.threads = t;
    }
    if let Some(s) = args.sequences {
        ep.concurrency = s;
    }
    if let Some(c) = args.context {
        ep.context_per_sequence = c;
    }
}

/// Ctrl-C, or SIGTERM on Unix; the handlers are installed before this returns.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
