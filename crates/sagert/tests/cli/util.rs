//! The harness: a temp dir, the binary, and helpers to run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `sagert` binary under test.
pub fn sagert() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sagert"));
    for (var, _) in sagert_config::env::OVERRIDES {
        cmd.env_remove(var);
    }
    cmd
}

/// Run `sagert` with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    sagert().current_dir(dir).args(args).output().expect("run sagert")
}

/// Output's stdout and stderr as text.
pub fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The exit code; panics if killed by a signal.
pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited normally")
}

/// A temp dir with a config file pointing every role at `base_url`.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Self {
        Workspace { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A config with one endpoint (or two) for role `target`.
    pub fn config(&self, name: &str, endpoints: &[&str], extra: &str) -> PathBuf {
        let mut s = String::from("[run]\nseed = 1\noutput_dir = \"run\"\n\n[retry]\nmax_retries = 2\nbase_delay_ms = 10\nmax_delay_ms = 50\n\n");
        let mut names = Vec::new();
        for (i, url) in endpoints.iter().enumerate() {
            let n = format!("ep{i}");
            s += &format!("[endpoints.{n}]\nbase_url = \"{url}\"\nconcurrency = 8\ntimeout_secs = 5.0\n\n");
            names.push(format!("\"{n}\""));
        }
        s += &format!(
            "[roles.target]\nmodel = \"mock-model\"\nendpoints = [{}]\nmax_tokens = 64\n\n",
            names.join(", ")
        );
        s += extra;
        self.write(name, &s)
    }

    /// A JSONL file of `n` prompts `placeholder prompt 0..n`.
    pub fn prompts(&self, name: &str, n: usize) -> PathBuf {
        let body: String = (0..n)
            .map(|i| format!("{{\"id\": \"p{i:04}\", \"prompt\": \"placeholder prompt {i}\"}}\n"))
            .collect();
        self.write(name, &body)
    }
}

/// Lines of a JSONL file as JSON values.
pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Whether the known model `name` is in the cache; under CI (which fetches
/// every model) a missing one fails the test instead of skipping it.
pub fn cached(name: &str) -> bool {
    let out = sagert().args(["models", "list", "--json"]).output().unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let ready = rows.iter().any(|r| r["name"] == name && r["status"]["state"] == "ready");
    if !ready {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI must run this test: run scripts/fetch-models"
        );
        eprintln!("skipped: {name} is not cached; run scripts/fetch-models {name}");
    }
    ready
}
