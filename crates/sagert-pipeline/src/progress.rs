//! One progress line per pipeline stage.
//!
//! [`StageProgress`] counts, per stage, the items known so far (`total`, which
//! grows as upstream stages produce work), the items done and failed, and the
//! tokens spent, and shows them in one of three [`ProgressMode`]s:
//!
//! - [`ProgressMode::Bars`]: an `indicatif` bar per stage on stderr,
//!   `stage [bar] finished/total rate/s ETA tokens N failed`, where `finished`
//!   counts done and failed items alike. When stderr is not a terminal the bars
//!   draw nothing, so [`StageProgress::finish`] prints one plain summary line
//!   per stage instead.
//! - [`ProgressMode::Json`]: one JSON object per line for machine logs:
//!   `{"event":"progress",...}` at most once per second per stage,
//!   `{"event":"failure","stage":..,"reason":..,"n":..}` for every failure, and
//!   `{"event":"stage_done",...}` per stage at finish.
//! - [`ProgressMode::Quiet`]: nothing is shown; the counts are still kept for
//!   [`StageProgress::snapshot`] and the run report.
//!
//! The reporter is a cheap `Clone` over an `Arc`; every stage task holds one.
//! Showing progress never fails a run: write errors are ignored.
//!
//! Rate and ETA: a stage's clock starts at its first event (a total, a done or
//! a failure) and stops when every known item is finished (or at
//! [`StageProgress::finish`]); the rate is finished items per second of that
//! clock and the ETA is the remaining items at that rate.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

/// The least time between two `progress` lines of one stage in JSON mode.
const JSON_INTERVAL: Duration = Duration::from_secs(1);

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// One `indicatif` bar per stage on stderr (a summary line per stage at the
    /// end when stderr is not a terminal).
    Bars,
    /// One JSON object per line on stderr, for machine logs.
    Json,
    /// Nothing.
    Quiet,
}

/// One stage's counts at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct StageCounts {
    /// The stage's name.
    pub stage: String,
    /// Items done.
    pub done: u64,
    /// Items known so far (done, failed and pending).
    pub total: u64,
    /// Items failed.
    pub failed: u64,
    /// Tokens spent on the done items.
    pub tokens: u64,
    /// Time from the stage's first event to now, to the moment its last known
    /// item finished, or to [`StageProgress::finish`].
    pub elapsed: Duration,
    /// Finished (done or failed) items per second of `elapsed`; 0 before any
    /// time has passed.
    pub rate: f64,
}

impl StageCounts {
    /// Items done or failed.
    pub fn finished(&self) -> u64 {
        self.done + self.failed
    }

    /// Items known but not finished.
    pub fn remaining(&self) -> u64 {
        self.total.saturating_sub(self.finished())
    }

    /// The time the remaining items take at the current rate: zero for a stage
    /// with all its known items finished, `None` when no rate is known yet.
    pub fn eta(&self) -> Option<Duration> {
        eta(self.total, self.remaining(), self.rate)
    }
}

/// Finished items per second of `elapsed`, 0 when no time has passed.
fn rate(finished: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        finished as f64 / secs
    } else {
        0.0
    }
}

/// The time `remaining` items take at `rate` per second.
fn eta(total: u64, remaining: u64, rate: f64) -> Option<Duration> {
    if total > 0 && remaining == 0 {
        Some(Duration::ZERO)
    } else if rate > 0.0 && remaining > 0 {
        Duration::try_from_secs_f64(remaining as f64 / rate).ok()
    } else {
        None
    }
}

/// `x` to three decimals, for JSON lines a person may read too.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Reads the time; tests replace it with a clock they move by hand.
type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Progress of the pipeline's stages, shown as [`ProgressMode`] says. Cheap to
/// clone; all clones count into the same stages.
#[derive(Clone)]
pub struct StageProgress {
    inner: Arc<Inner>,
}

struct Inner {
    mode: ProgressMode,
    /// In display order; stages first named after construction go last.
    stages: RwLock<Vec<Arc<Stage>>>,
    /// JSON lines, or the summary lines of hidden bars.
    out: Mutex<Box<dyn Write + Send>>,
    /// The bars, in Bars mode.
    multi: Option<MultiProgress>,
    style: Option<ProgressStyle>,
    clock: Clock,
    finished: AtomicBool,
}

struct Stage {
    name: String,
    state: Mutex<State>,
    bar: Option<ProgressBar>,
}

#[derive(Default)]
struct State {
    done: u64,
    total: u64,
    failed: u64,
    tokens: u64,
    /// The stage's first event.
    started: Option<Instant>,
    /// When the last known item finished; cleared when the total grows again.
    completed: Option<Instant>,
    /// When [`StageProgress::finish`] stopped the clock.
    stopped: Option<Instant>,
    /// The last JSON `progress` line.
    last_emit: Option<Instant>,
}

impl State {
    fn counts(&self, stage: &str, now: Instant) -> StageCounts {
        let end = self.completed.or(self.stopped).unwrap_or(now);
        let elapsed = self.started.map_or(Duration::ZERO, |start| end.saturating_duration_since(start));
        StageCounts {
            stage: stage.to_owned(),
            done: self.done,
            total: self.total,
            failed: self.failed,
            tokens: self.tokens,
            elapsed,
            rate: rate(self.done + self.failed, elapsed),
        }
    }

    /// Starts the clock on the first event and stops it when every known
    /// item is finished.
    fn touch(&mut self, now: Instant) {
        self.started.get_or_insert(now);
        if self.total > 0 && self.done + self.failed >= self.total {
            self.completed.get_or_insert(now);
        } else {
            self.completed = None;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while counting leaves the counts usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StageProgress {
    /// A reporter for `stages`, shown in that order, writing to stderr.
    pub fn new(stages: &[&str], mode: ProgressMode) -> Self {
        Self::build(
            stages,
            mode,
            Box::new(std::io::stderr()),
            Arc::new(Instant::now),
            ProgressDrawTarget::stderr(),
        )
    }

    /// A [`ProgressMode::Json`] reporter writing its lines to `writer` instead
    /// of stderr.
    pub fn with_writer(stages: &[&str], writer: Box<dyn Write + Send>) -> Self {
        Self::build(stages, ProgressMode::Json, writer, Arc::new(Instant::now), ProgressDrawTarget::hidden())
    }

    fn build(
        stages: &[&str],
        mode: ProgressMode,
        out: Box<dyn Write + Send>,
        clock: Clock,
        target: ProgressDrawTarget,
    ) -> Self {
        let (multi, style) = if mode == ProgressMode::Bars {
            let width = stages.iter().map(|s| s.len()).max().unwrap_or(0);
            let template = format!(
                "{{prefix:<{width}}} [{{bar:24}}] {{pos:>7}}/{{len:<7}} {{per_sec:>12}} ETA {{eta:>4}} {{msg}}"
            );
            let style = ProgressStyle::with_template(&template)
                .expect("the bar template is valid")
                .progress_chars("=> ");
            (Some(MultiProgress::with_draw_target(target)), Some(style))
        } else {
            (None, None)
        };
        let progress = StageProgress {
            inner: Arc::new(Inner {
                mode,
                stages: RwLock::new(Vec::new()),
                out: Mutex::new(out),
                multi,
                style,
                clock,
                finished: AtomicBool::new(false),
            }),
        };
        for stage in stages {
            progress.stage(stage);
        }
        progress
    }

    /// How this reporter shows progress.
    pub fn mode(&self) -> ProgressMode {
        self.inner.mode
    }

    /// The stage called `name`, added at the end when it is new.
    fn stage(&self, name: &str) -> Arc<Stage> {
        let read = self.inner.stages.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(stage) = read.iter().find(|s| s.name == name) {
            return Arc::clone(stage);
        }
        drop(read);
        let mut stages = self.inner.stages.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(stage) = stages.iter().find(|s| s.name == name) {
            return Arc::clone(stage);
        }
        let bar = self.inner.multi.as_ref().zip(self.inner.style.as_ref()).map(|(multi, style)| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden())
                .with_style(style.clone())
                .with_prefix(name.to_owned())
                .with_message("0 tok  0 failed");
            multi.add(bar)
        });
        let stage = Arc::new(Stage { name: name.to_owned(), state: Mutex::new(State::default()), bar });
        stages.push(Arc::clone(&stage));
        stage
    }

    /// Adds `n` items to `stage`'s total, as an upstream stage hands it work.
    pub fn add_total(&self, stage: &str, n: u64) {
        self.update(stage, |state| state.total += n);
    }

    /// Counts `n` items of `stage` done, which spent `tokens` tokens.
    pub fn inc_done(&self, stage: &str, n: u64, tokens: u64) {
        self.update(stage, |state| {
            state.done += n;
            state.tokens += tokens;
        });
    }

    /// Counts `n` items of `stage` failed, for `reason`.
    pub fn inc_failed(&self, stage: &str, n: u64, reason: &str) {
        self.update(stage, |state| state.failed += n);
        if self.inner.mode == ProgressMode::Json && !self.inner.finished.load(Ordering::Relaxed) {
            self.write_json(&json!({ "event": "failure", "stage": stage, "reason": reason, "n": n }));
        }
    }

    fn update(&self, name: &str, change: impl FnOnce(&mut State)) {
        let stage = self.stage(name);
        let now = (self.inner.clock)();
        let mut state = lock(&stage.state);
        change(&mut state);
        state.touch(now);
        if self.inner.finished.load(Ordering::Relaxed) {
            return;
        }
        if let Some(bar) = &stage.bar {
            bar.set_length(state.total);
            bar.set_position(state.done + state.failed);
            bar.set_message(format!("{} tok  {} failed", state.tokens, state.failed));
        }
        if self.inner.mode == ProgressMode::Json
            && state.last_emit.is_none_or(|last| now.saturating_duration_since(last) >= JSON_INTERVAL)
        {
            state.last_emit = Some(now);
            let counts = state.counts(name, now);
            self.write_json(&json_line("progress", &counts));
        }
    }

    /// Every stage's counts now, in display order.
    pub fn snapshot(&self) -> Vec<StageCounts> {
        let now = (self.inner.clock)();
        let stages = self.inner.stages.read().unwrap_or_else(PoisonError::into_inner);
        stages.iter().map(|stage| lock(&stage.state).counts(&stage.name, now)).collect()
    }

    /// Stops every stage's clock and shows the final counts: the bars stay on
    /// screen (or, when stderr is no terminal, a summary line per stage is
    /// printed), JSON mode writes a `stage_done` line per stage. Only the first
    /// call does anything; counting afterwards is kept but not shown.
    pub fn finish(&self) {
        if self.inner.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        let now = (self.inner.clock)();
        let stages = self.inner.stages.read().unwrap_or_else(PoisonError::into_inner).clone();
        let hidden = self.inner.multi.as_ref().is_some_and(MultiProgress::is_hidden);
        for stage in stages {
            let mut state = lock(&stage.state);
            state.stopped.get_or_insert(now);
            let counts = state.counts(&stage.name, now);
            drop(state);
            if let Some(bar) = &stage.bar {
                bar.finish();
            }
            match self.inner.mode {
                ProgressMode::Json => self.write_json(&json_line("stage_done", &counts)),
                ProgressMode::Bars if hidden => self.write_line(&summary_line(&counts)),
                ProgressMode::Bars | ProgressMode::Quiet => {}
            }
        }
    }

    fn write_json(&self, value: &serde_json::Value) {
        self.write_line(&value.to_string());
    }

    fn write_line(&self, line: &str) {
        let mut out = lock(&self.inner.out);
        // Progress is never worth failing a run over: a closed stderr or a
        // full disk loses lines, nothing else.
        let _ = writeln!(out, "{line}").and_then(|()| out.flush());
    }
}

impl fmt::Debug for StageProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StageProgress")
            .field("mode", &self.inner.mode)
            .field("stages", &self.snapshot())
            .finish()
    }
}

/// A JSON `progress` or `stage_done` line.
fn json_line(event: &str, counts: &StageCounts) -> serde_json::Value {
    let mut line = json!({
        "event": event,
        "stage": counts.stage,
        "done": counts.done,
        "total": counts.total,
        "failed": counts.failed,
        "tokens": counts.tokens,
        "rate": round3(counts.rate),
        "eta_s": counts.eta().map(|eta| round3(eta.as_secs_f64())),
    });
    if event == "stage_done" {
        line["elapsed_s"] = json!(round3(counts.elapsed.as_secs_f64()));
    }
    line
}

/// The plain line a stage ends with when the bars were not drawn.
fn summary_line(counts: &StageCounts) -> String {
    format!(
        "{}: {}/{} done, {} failed, {} tokens, {:.1}s, {:.2}/s",
        counts.stage,
        counts.done,
        counts.total,
        counts.failed,
        counts.tokens,
        counts.elapsed.as_secs_f64(),
        counts.rate
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(lock(&self.0).clone()).unwrap().lines().map(str::to_owned).collect()
        }

        fn json(&self) -> Vec<serde_json::Value> {
            self.lines().iter().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect()
        }
    }

    /// A clock the test moves by hand.
    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<Instant>>);

    impl ManualClock {
        fn new() -> Self {
            ManualClock(Arc::new(Mutex::new(Instant::now())))
        }

        fn advance(&self, by: Duration) {
            *lock(&self.0) += by;
        }

        fn clock(&self) -> Clock {
            let me = self.clone();
            Arc::new(move || *lock(&me.0))
        }
    }

    fn reporter(stages: &[&str], mode: ProgressMode) -> (StageProgress, Captured, ManualClock) {
        let out = Captured::default();
        let clock = ManualClock::new();
        let progress = StageProgress::build(
            stages,
            mode,
            Box::new(out.clone()),
            clock.clock(),
            ProgressDrawTarget::hidden(),
        );
        (progress, out, clock)
    }

    #[test]
    fn counts_add_up_across_clones_and_threads() {
        let progress = StageProgress::new(&["expand", "responses"], ProgressMode::Quiet);
        progress.add_total("responses", 4000);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let progress = progress.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        if i % 10 == 0 {
                            progress.inc_failed("responses", 1, "judge refused");
                        } else {
                            progress.inc_done("responses", 1, 7);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        let snapshot = progress.snapshot();
        assert_eq!(snapshot.iter().map(|c| c.stage.as_str()).collect::<Vec<_>>(), ["expand", "responses"]);
        let responses = &snapshot[1];
        assert_eq!((responses.done, responses.failed, responses.total), (3600, 400, 4000));
        assert_eq!(responses.tokens, 3600 * 7);
        assert_eq!(responses.remaining(), 0);
        assert_eq!((snapshot[0].done, snapshot[0].total, snapshot[0].elapsed), (0, 0, Duration::ZERO));
    }

    #[test]
    fn a_stage_not_named_up_front_is_added_last() {
        let (progress, _, _) = reporter(&["expand", "export"], ProgressMode::Quiet);
        progress.inc_done("dedup", 2, 0);
        let stages: Vec<_> = progress.snapshot().into_iter().map(|c| (c.stage, c.done)).collect();
        assert_eq!(stages, [("expand".into(), 0), ("export".into(), 0), ("dedup".into(), 2)]);
    }

    #[test]
    fn rate_and_eta_arithmetic() {
        assert_eq!(rate(10, Duration::from_secs(4)), 2.5);
        assert_eq!(rate(10, Duration::ZERO), 0.0);
        assert_eq!(eta(40, 30, 2.5), Some(Duration::from_secs(12)));
        assert_eq!(eta(40, 0, 2.5), Some(Duration::ZERO));
        assert_eq!(eta(40, 30, 0.0), None);
        assert_eq!(eta(0, 0, 0.0), None);
        let counts = StageCounts {
            stage: "extract".into(),
            done: 8,
            total: 20,
            failed: 2,
            tokens: 0,
            elapsed: Duration::from_secs(5),
            rate: rate(10, Duration::from_secs(5)),
        };
        assert_eq!((counts.finished(), counts.remaining(), counts.rate), (10, 10, 2.0));
        assert_eq!(counts.eta(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn the_clock_runs_from_the_first_event_to_the_last_item() {
        let (progress, _, clock) = reporter(&["raw_text"], ProgressMode::Quiet);
        clock.advance(Duration::from_secs(100)); // Idle before the stage starts: not counted.
        progress.add_total("raw_text", 10);
        clock.advance(Duration::from_secs(4));
        progress.inc_done("raw_text", 6, 600);
        progress.inc_failed("raw_text", 2, "empty");
        let counts = &progress.snapshot()[0];
        assert_eq!(counts.elapsed, Duration::from_secs(4));
        assert_eq!(counts.rate, 2.0);
        assert_eq!(counts.eta(), Some(Duration::from_secs(1)));

        clock.advance(Duration::from_secs(1));
        progress.inc_done("raw_text", 2, 200);
        clock.advance(Duration::from_secs(60)); // Complete: the clock stopped.
        assert_eq!(progress.snapshot()[0].elapsed, Duration::from_secs(5));

        progress.add_total("raw_text", 5); // More work: the clock runs again.
        clock.advance(Duration::from_secs(5));
        let counts = &progress.snapshot()[0];
        assert_eq!(counts.elapsed, Duration::from_secs(70));
        progress.finish();
        clock.advance(Duration::from_secs(9));
        assert_eq!(progress.snapshot()[0].elapsed, Duration::from_secs(70));
    }

    #[test]
    fn json_progress_lines_at_most_once_a_second_per_stage() {
        let (progress, out, clock) = reporter(&["extract", "diversify"], ProgressMode::Json);
        progress.add_total("extract", 10);
        clock.advance(Duration::from_millis(500));
        progress.inc_done("extract", 2, 30); // Within the second: no line.
        progress.add_total("diversify", 4); // Another stage has its own second.
        clock.advance(Duration::from_millis(500));
        progress.inc_done("extract", 2, 50);

        let lines = out.json();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(
            lines[0],
            json!({"event": "progress", "stage": "extract", "done": 0, "total": 10, "failed": 0,
                   "tokens": 0, "rate": 0.0, "eta_s": null})
        );
        assert_eq!(lines[1]["stage"], "diversify");
        assert_eq!(
            lines[2],
            json!({"event": "progress", "stage": "extract", "done": 4, "total": 10, "failed": 0,
                   "tokens": 80, "rate": 4.0, "eta_s": 1.5})
        );
    }

    #[test]
    fn json_failures_and_stage_done_lines() {
        let (progress, out, _) = reporter(&["validate", "dedup"], ProgressMode::Json);
        progress.add_total("validate", 3);
        progress.inc_failed("validate", 1, "rejected response is \"safe\"");
        progress.inc_done("validate", 2, 0);
        progress.finish();
        progress.finish(); // Once only.
        progress.inc_done("dedup", 1, 0); // After finish: counted, not shown.

        let lines = out.json();
        let events: Vec<_> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["progress", "failure", "stage_done", "stage_done"]);
        assert_eq!(
            lines[1],
            json!({"event": "failure", "stage": "validate", "reason": "rejected response is \"safe\"", "n": 1})
        );
        let done = &lines[2];
        assert_eq!(
            (done["stage"].as_str(), done["done"].as_u64(), done["failed"].as_u64()),
            (Some("validate"), Some(2), Some(1))
        );
        assert_eq!(done["eta_s"], 0.0);
        assert!(done["elapsed_s"].is_number());
        assert_eq!((lines[3]["stage"].as_str(), lines[3]["total"].as_u64()), (Some("dedup"), Some(0)));
        assert_eq!(progress.snapshot()[1].done, 1);
    }

    #[test]
    fn with_writer_is_json_mode_into_the_writer() {
        let out = Captured::default();
        let progress = StageProgress::with_writer(&["export"], Box::new(out.clone()));
        assert_eq!(progress.mode(), ProgressMode::Json);
        progress.finish();
        assert_eq!(out.json()[0]["event"], "stage_done");
    }

    #[test]
    fn hidden_bars_print_a_summary_line_per_stage_at_finish() {
        let (progress, out, clock) = reporter(&["balance", "export"], ProgressMode::Bars);
        progress.add_total("balance", 8);
        clock.advance(Duration::from_secs(2));
        progress.inc_done("balance", 5, 1234);
        progress.inc_failed("balance", 3, "over quota");
        assert!(out.lines().is_empty(), "nothing before finish");
        progress.finish();
        assert_eq!(
            out.lines(),
            [
                "balance: 5/8 done, 3 failed, 1234 tokens, 2.0s, 4.00/s",
                "export: 0/0 done, 0 failed, 0 tokens, 0.0s, 0.00/s"
            ]
        );
    }

    #[test]
    fn quiet_writes_nothing() {
        let (progress, out, _) = reporter(&["dedup"], ProgressMode::Quiet);
        progress.add_total("dedup", 2);
        progress.inc_failed("dedup", 1, "duplicate");
        progress.inc_done("dedup", 1, 0);
        progress.finish();
        assert!(out.lines().is_empty());
        assert_eq!(progress.snapshot()[0].finished(), 2);
    }

    #[test]
    fn the_reporter_is_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<StageProgress>();
    }
}
