//! Behaviour tests of the run store, each in its own temporary run directory.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use sagert_backend::{
    BackendError, ChatMessage, ChatRequest, ChatResponse, Choice, FailureKind, FinishReason, JsonSchema,
    ModelRole, Usage,
};
use sagert_store::{
    cache_key, CallKey, CallRecord, FailureRecord, ItemState, RoleStats, Store, StoreError, WorkItem,
    DB_FILE, SCHEMA_VERSION,
};

// ---------------------------------------------------------------------------------
// Helpers

fn run_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

fn request(text: &str) -> ChatRequest {
    let mut r = ChatRequest::new(vec![ChatMessage::system("You write test data."), ChatMessage::user(text)]);
    r.params.temperature = Some(0.7);
    r.params.seed = Some(7);
    r
}

fn response(text: &str, prompt_tokens: u64, completion_tokens: u64) -> ChatResponse {
    ChatResponse {
        model: "mock-1".into(),
        choices: vec![Choice { text: text.into(), finish_reason: FinishReason::Stop }],
        usage: Usage { prompt_tokens, completion_tokens },
    }
}

fn record(role: ModelRole, text: &str, tokens: (u64, u64), cost_usd: f64) -> CallRecord {
    let request = request(text);
    CallRecord {
        key: cache_key("mock-1", &request),
        role,
        model: "mock-1".into(),
        endpoint: "local".into(),
        request,
        response: response(&format!("answer to {text}"), tokens.0, tokens.1),
        latency_ms: 12,
        attempts: 1,
        cost_usd,
    }
}

fn failure(role: ModelRole, label: &str, at_unix_ms: i64) -> FailureRecord {
    FailureRecord {
        role,
        key: None,
        model: "mock-1".into(),
        label: label.into(),
        message: format!("{label} happened"),
        attempts: 3,
        elapsed_ms: 1500,
        item: None,
        at_unix_ms,
    }
}

fn item(stage: &str, id: &str, state: ItemState, n: i64) -> WorkItem {
    WorkItem {
        stage: stage.into(),
        item_id: id.into(),
        state,
        payload: json!({"n": n, "text": format!("item {id}")}),
        attempts: 0,
        error: None,
        updated_at_unix_ms: 1_700_000_000_000 + n,
    }
}

fn raw_connection(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(DB_FILE)).expect("open the database directly")
}

// ---------------------------------------------------------------------------------
// Cache keys

#[test]
fn cache_key_changes_with_every_input_that_shapes_the_answer() {
    let base = request("Name a colour.");
    let key = cache_key("mock-1", &base);
    assert_eq!(key, cache_key("mock-1", &base.clone()), "same input, same key");

    let mut variants: Vec<(&str, String, ChatRequest)> = Vec::new();
    variants.push(("model", "mock-2".into(), base.clone()));
    let mut r = base.clone();
    r.messages[1].content.push('!');
    variants.push(("message", "mock-1".into(), r));
    let mut r = base.clone();
    r.messages.push(ChatMessage::assistant("Blue."));
    variants.push(("message count", "mock-1".into(), r));
    let mut r = base.clone();
    r.params.temperature = Some(0.8);
    variants.push(("temperature", "mock-1".into(), r));
    let mut r = base.clone();
    r.params.seed = Some(8);
    variants.push(("seed", "mock-1".into(), r));
    let mut r = base.clone();
    r.params.n = 2;
    variants.push(("n", "mock-1".into(), r));
    let mut r = base.clone();
    r.params.stop = vec!["\n".into()];
    variants.push(("stop", "mock-1".into(), r));
    let mut r = base.clone();
    r.schema = Some(JsonSchema { name: "colour".into(), schema: json!({"type": "object"}) });
    variants.push(("schema added", "mock-1".into(), r.clone()));
    let mut r2 = r.clone();
    r2.schema.as_mut().unwrap().schema = json!({"type": "array"});
    variants.push(("schema body", "mock-1".into(), r2));

    for (what, model, req) in &variants {
        assert_ne!(cache_key(model, req), key, "changing the {what} must change the key");
    }
}

#[test]
fn cache_key_ignores_object_key_order_in_the_schema() {
    // Build the same schema with keys inserted in opposite orders, at two depths.
    let mut inner_a = Map::new();
    inner_a.insert("type".into(), json!("string"));
    inner_a.insert("minLength".into(), json!(1));
    let mut inner_b = Map::new();
    inner_b.insert("minLength".into(), json!(1));
    inner_b.insert("type".into(), json!("string"));
    let mut a = Map::new();
    a.insert("type".into(), json!("object"));
    a.insert("properties".into(), json!({"name": Value::Object(inner_a)}));
    let mut b = Map::new();
    b.insert("properties".into(), json!({"name": Value::Object(inner_b)}));
    b.insert("type".into(), json!("object"));
    // And from JSON text with different key order.
    let c: Value =
        serde_json::from_str(r#"{"properties":{"name":{"minLength":1,"type":"string"}},"type":"object"}"#)
            .unwrap();

    let with = |schema: Value| {
        let mut r = request("x");
        r.schema = Some(JsonSchema { name: "s".into(), schema });
        cache_key("mock-1", &r)
    };
    let ka = with(Value::Object(a));
    assert_eq!(ka, with(Value::Object(b)));
    assert_eq!(ka, with(c));
}

// ---------------------------------------------------------------------------------
// Calls

#[test]
fn put_then_get_round_trips_and_counts_hits() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    let rec = record(ModelRole::Generator, "a", (10, 20), 0.25);

    assert_eq!(store.get_call(&rec.key).unwrap(), None, "nothing stored yet");
    assert!(store.put_call(&rec).unwrap(), "first put is new");

    let got = store.get_call(&rec.key).unwrap().expect("stored call");
    assert_eq!(got.response, rec.response);
    assert_eq!(
        (got.role, got.model.as_str(), got.endpoint.as_str()),
        (ModelRole::Generator, "mock-1", "local")
    );
    assert_eq!(got.cost_usd, 0.25);
    assert_eq!(got.hits, 1);
    assert!(got.created_at > 1_600_000_000_000, "created_at is Unix ms: {}", got.created_at);
    assert_eq!(store.get_call(&rec.key).unwrap().unwrap().hits, 2);
    // Reading back for an export is not a cache hit.
    let peeked = store.peek_call(&rec.key).unwrap().expect("stored call");
    assert_eq!((peeked.hits, &peeked.response), (2, &rec.response));
    assert_eq!(store.peek_call(&rec.key).unwrap().unwrap().hits, 2);
    assert_eq!(store.role_stats().unwrap()[0].cache_hits, 2);

    // The request is stored as its JSON and nothing else.
    let stored: String = raw_connection(dir.path())
        .query_row("SELECT request_json FROM calls WHERE key = ?1", [rec.key.as_str()], |r| r.get(0))
        .unwrap();
    assert_eq!(serde_json::from_str::<ChatRequest>(&stored).unwrap(), rec.request);

    // A cost that is not a number (a pricing bug) does not lose the call.
    let nan = record(ModelRole::Generator, "nan", (1, 1), f64::NAN);
    assert!(store.put_call(&nan).unwrap());
    assert_eq!(store.get_call(&nan.key).unwrap().unwrap().cost_usd, 0.0);
}

#[test]
fn put_call_keeps_the_first_answer_for_a_key() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    let first = record(ModelRole::Judge, "q", (1, 2), 0.5);
    let mut second = first.clone();
    second.response = response("a different answer", 3, 4);
    second.cost_usd = 9.0;

    assert!(store.put_call(&first).unwrap());
    assert!(!store.put_call(&second).unwrap(), "same key again is not new");
    let got = store.get_call(&first.key).unwrap().unwrap();
    assert_eq!(got.response, first.response);
    assert_eq!(got.cost_usd, 0.5);
    assert_eq!(store.role_stats().unwrap()[0].calls, 1);
}

#[test]
fn role_stats_add_up_calls_hits_tokens_cost_and_failures() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    let g1 = record(ModelRole::Generator, "g1", (10, 5), 0.125);
    let g2 = record(ModelRole::Generator, "g2", (20, 7), 0.25);
    let j1 = record(ModelRole::Judge, "j1", (100, 1), 1.0);
    for r in [&g1, &g2, &j1] {
        assert!(store.put_call(r).unwrap());
    }
    for key in [&g1.key, &g1.key, &g2.key, &j1.key] {
        store.get_call(key).unwrap().unwrap();
    }
    store.get_call(&CallKey("0".repeat(64))).unwrap(); // a miss counts nowhere
    store.record_failure(&failure(ModelRole::Generator, "timeout", 1)).unwrap();
    store.record_failure(&failure(ModelRole::Generator, "timeout", 2)).unwrap();
    store.record_failure(&failure(ModelRole::Generator, "server_503", 3)).unwrap();
    store.record_failure(&failure(ModelRole::Target, "schema_mismatch", 4)).unwrap();

    let labels =
        |pairs: &[(&str, u64)]| pairs.iter().map(|(l, n)| (l.to_string(), *n)).collect::<BTreeMap<_, _>>();
    let expected = vec![
        RoleStats {
            role: ModelRole::Generator,
            calls: 2,
            cache_hits: 3,
            prompt_tokens: 30,
            completion_tokens: 12,
            cost_usd: 0.375,
            failures: 3,
            failures_by_label: labels(&[("server_503", 1), ("timeout", 2)]),
        },
        RoleStats {
            role: ModelRole::Judge,
            calls: 1,
            cache_hits: 1,
            prompt_tokens: 100,
            completion_tokens: 1,
            cost_usd: 1.0,
            failures: 0,
            failures_by_label: BTreeMap::new(),
        },
        RoleStats {
            role: ModelRole::Target,
            calls: 0,
            cache_hits: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            failures: 1,
            failures_by_label: labels(&[("schema_mismatch", 1)]),
        },
    ];
    assert_eq!(store.role_stats().unwrap(), expected);
}

#[test]
fn failures_list_newest_first_with_every_field() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    let err = BackendError::Request {
        endpoint: "local".into(),
        kind: FailureKind::Server(503),
        attempts: 4,
        elapsed: Duration::from_millis(2500),
        message: "overloaded".into(),
    };
    let first = FailureRecord {
        key: Some(CallKey("ab".repeat(32))),
        item: Some("respond/item-001".into()),
        ..FailureRecord::from_error(ModelRole::SafeResponder, "mock-1", &err)
    };
    assert_eq!((first.label.as_str(), first.attempts, first.elapsed_ms), ("server_503", 4, 2500));
    store.record_failure(&first).unwrap();
    for i in 0..3 {
        store.record_failure(&failure(ModelRole::Judge, &format!("label_{i}"), 10 + i)).unwrap();
    }

    let newest: Vec<String> = store.failures(2).unwrap().into_iter().map(|f| f.label).collect();
    assert_eq!(newest, ["label_2", "label_1"]);
    let all = store.failures(100).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3], first, "every field survives the round trip");
}

// ---------------------------------------------------------------------------------
// Work items

#[test]
fn items_upsert_transition_count_and_order() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    // Inserted out of order, across two stages.
    store
        .put_items(&[
            item("expand", "b", ItemState::Pending, 2),
            item("expand", "c", ItemState::Pending, 3),
            item("expand", "a", ItemState::Pending, 1),
            item("respond", "a", ItemState::Done, 9),
        ])
        .unwrap();
    let ids = |items: Vec<WorkItem>| items.into_iter().map(|i| i.item_id).collect::<Vec<_>>();
    assert_eq!(ids(store.items("expand", None).unwrap()), ["a", "b", "c"]);

    // Pending -> Running -> Failed for `b`, with attempts and an error, by upsert.
    let mut b = store.get_item("expand", "b").unwrap().unwrap();
    assert_eq!(b, item("expand", "b", ItemState::Pending, 2));
    b.state = ItemState::Running;
    b.attempts = 1;
    store.put_item(&b).unwrap();
    b.state = ItemState::Failed;
    b.error = Some("judge said no".into());
    b.payload = json!({"n": 2, "output": null});
    store.put_item(&b).unwrap();
    assert_eq!(store.get_item("expand", "b").unwrap().unwrap(), b);

    let mut c = item("expand", "c", ItemState::Running, 3);
    c.attempts = 2;
    store.put_item(&c).unwrap();

    assert_eq!(ids(store.items("expand", Some(ItemState::Pending)).unwrap()), ["a"]);
    assert_eq!(ids(store.items("expand", Some(ItemState::Failed)).unwrap()), ["b"]);
    let counts = store.count_items("expand").unwrap();
    let expected: BTreeMap<ItemState, u64> = [
        (ItemState::Pending, 1),
        (ItemState::Running, 1),
        (ItemState::Done, 0),
        (ItemState::Failed, 1),
        (ItemState::Dropped, 0),
    ]
    .into();
    assert_eq!(counts, expected);
    assert_eq!(store.count_items("respond").unwrap()[&ItemState::Done], 1);
    assert_eq!(store.count_items("nothing").unwrap().values().sum::<u64>(), 0);
    assert_eq!(store.get_item("expand", "zzz").unwrap(), None);
    assert_eq!(store.stages().unwrap(), ["expand", "respond"]);

    // After a crash, running items go back to pending; other stages are untouched.
    assert_eq!(store.requeue_running("expand").unwrap(), 1);
    let c = store.get_item("expand", "c").unwrap().unwrap();
    assert_eq!((c.state, c.attempts), (ItemState::Pending, 2));
    assert_eq!(store.requeue_running("expand").unwrap(), 0);
}

#[test]
fn a_failing_batch_stores_none_of_its_items() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    // A trigger that rejects one item id stands in for a write that fails mid-batch.
    raw_connection(dir.path())
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON items WHEN NEW.item_id = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned item'); END;",
        )
        .unwrap();
    let batch = [
        item("s", "a", ItemState::Pending, 1),
        item("s", "b", ItemState::Pending, 2),
        item("s", "poison", ItemState::Pending, 3),
    ];
    let err = store.put_items(&batch).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Sqlite { op: "store item", .. }), "{err:?}");
    assert!(
        msg.contains("s/a and 2 more") && msg.contains("poisoned item") && msg.contains(DB_FILE),
        "{msg}"
    );
    assert!(store.items("s", None).unwrap().is_empty(), "the batch must be all or nothing");
    // The store is still usable afterwards.
    store.put_items(&batch[..2]).unwrap();
    assert_eq!(store.items("s", None).unwrap().len(), 2);
}

// ---------------------------------------------------------------------------------
// Metadata, reopening, errors

#[test]
fn meta_sets_replaces_and_lists() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.meta("config_hash").unwrap(), None);
    store.set_meta("config_hash", "abc").unwrap();
    store.set_meta("config_hash", "def").unwrap();
    store.set_meta("stop_reason", "budget").unwrap();
    assert_eq!(store.meta("config_hash").unwrap().as_deref(), Some("def"));
    let all = store.all_meta().unwrap();
    assert_eq!(
        all.into_iter().collect::<Vec<_>>(),
        [("config_hash".to_string(), "def".to_string()), ("stop_reason".to_string(), "budget".to_string())]
    );
}

#[test]
fn reopening_keeps_everything() {
    let dir = run_dir();
    let nested = dir.path().join("runs").join("r1");
    let rec = record(ModelRole::Expander, "e", (3, 4), 0.5);
    {
        let store = Store::open(&nested).unwrap();
        assert_eq!(store.path(), nested.join(DB_FILE));
        assert_eq!(store.run_dir(), nested);
        store.put_call(&rec).unwrap();
        store.get_call(&rec.key).unwrap();
        store.record_failure(&failure(ModelRole::Expander, "timeout", 5)).unwrap();
        store.put_item(&item("expand", "x", ItemState::Done, 1)).unwrap();
        store.set_meta("k", "v").unwrap();
    }
    let store = Store::open_existing(&nested).unwrap();
    assert_eq!(store.get_call(&rec.key).unwrap().unwrap().hits, 2, "the earlier hit was kept");
    assert_eq!(store.failures(10).unwrap().len(), 1);
    assert_eq!(store.get_item("expand", "x").unwrap().unwrap(), item("expand", "x", ItemState::Done, 1));
    assert_eq!(store.meta("k").unwrap().as_deref(), Some("v"));
    assert_eq!(store.integrity_check().unwrap(), "ok");
    drop(store);

    let conn = raw_connection(&nested);
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!((mode.as_str(), version), ("wal", SCHEMA_VERSION));
}

#[test]
fn open_existing_refuses_a_directory_without_a_store() {
    let dir = run_dir();
    for path in [dir.path().to_path_buf(), dir.path().join("missing")] {
        let err = Store::open_existing(&path).unwrap_err();
        assert!(matches!(&err, StoreError::NotARunDir { path: p } if *p == path), "{err:?}");
        assert!(err.to_string().contains("is not a run directory"), "{err}");
    }
    assert!(!dir.path().join(DB_FILE).exists(), "open_existing must not create a database");
}

#[test]
fn open_says_which_path_it_could_not_create() {
    let dir = run_dir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let err = Store::open(&file.join("run")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err
        .to_string()
        .starts_with(&format!("cannot create run directory {}", file.join("run").display())));

    // A directory where the database file should be: SQLite cannot open it.
    let dir2 = run_dir();
    std::fs::create_dir(dir2.path().join(DB_FILE)).unwrap();
    let err = Store::open(dir2.path()).unwrap_err();
    let expected = format!("cannot open run store {}: ", dir2.path().join(DB_FILE).display());
    assert!(err.to_string().starts_with(&expected), "{err}");
}

#[test]
fn a_store_from_a_newer_sagert_is_refused() {
    let dir = run_dir();
    drop(Store::open(dir.path()).unwrap());
    raw_connection(dir.path()).pragma_update(None, "user_version", SCHEMA_VERSION + 5).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { found, .. } if found == SCHEMA_VERSION + 5), "{err:?}");
}

#[test]
fn corrupt_rows_are_reported_not_returned() {
    let dir = run_dir();
    let store = Store::open(dir.path()).unwrap();
    let rec = record(ModelRole::Judge, "c", (1, 1), 0.0);
    store.put_call(&rec).unwrap();
    store.put_item(&item("s", "i", ItemState::Done, 1)).unwrap();
    let conn = raw_connection(dir.path());
    conn.execute("UPDATE calls SET response_json = '{\"model\": 3' WHERE key = ?1", [rec.key.as_str()])
        .unwrap();
    conn.execute("UPDATE items SET payload_json = 'nope'", []).unwrap();

    let err = store.get_call(&rec.key).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(msg.contains(&rec.key.short()) && msg.contains(DB_FILE) && msg.contains("response"), "{msg}");
    let err = store.items("s", None).unwrap_err();
    assert!(err.to_string().contains("payload of item s/i"), "{err}");

    conn.execute("UPDATE calls SET role = 'critic'", []).unwrap();
    let err = store.role_stats().unwrap_err();
    assert!(err.to_string().contains("unknown model role `critic`"), "{err}");
}

#[test]
fn many_threads_share_one_store() {
    let dir = run_dir();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..50 {
                    // Every thread writes the same 50 calls and its own 50 items.
                    let rec = record(ModelRole::Generator, &format!("shared {i}"), (1, 1), 0.01);
                    store.put_call(&rec).unwrap();
                    assert!(store.get_call(&rec.key).unwrap().is_some());
                    store.put_item(&item("t", &format!("{t}-{i:03}"), ItemState::Done, i)).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let stats = store.role_stats().unwrap();
    assert_eq!((stats[0].calls, stats[0].cache_hits), (50, 400));
    assert_eq!(store.count_items("t").unwrap()[&ItemState::Done], 400);
}

// ---------------------------------------------------------------------------------
// Crash safety: a writer process killed with SIGKILL at a random moment

/// Tells the test binary, run as a child, to act as the crash writer in this directory.
const CRASH_WRITER_ENV: &str = "SAGERT_STORE_CRASH_WRITER_DIR";
const CRASH_STAGE: &str = "crash";
const CRASH_BATCH: usize = 25;

fn crash_items(batch: usize) -> Vec<WorkItem> {
    (0..CRASH_BATCH)
        .map(|i| WorkItem {
            stage: CRASH_STAGE.into(),
            item_id: format!("b{batch:07}-{i:02}"),
            state: if i % 2 == 0 { ItemState::Done } else { ItemState::Pending },
            payload: json!({"batch": batch, "i": i, "text": "x".repeat(100 + i * 7)}),
            attempts: i as u32,
            error: None,
            updated_at_unix_ms: batch as i64,
        })
        .collect()
}

fn crash_call(batch: usize) -> CallRecord {
    record(ModelRole::Generator, &format!("crash batch {batch}"), (batch as u64, 10), 0.001)
}

/// The child side of [`sigkill_leaves_the_store_consistent`]: does nothing unless
/// started by it, then writes batches until killed (or for 60 s at most).
#[test]
#[ignore = "child process of sigkill_leaves_the_store_consistent, which starts it"]
fn crash_writer_child() {
    let Some(dir) = std::env::var_os(CRASH_WRITER_ENV) else { return };
    let store = Store::open(Path::new(&dir)).unwrap();
    let done = store.count_items(CRASH_STAGE).unwrap().values().sum::<u64>() as usize;
    assert_eq!(done % CRASH_BATCH, 0, "batches are all or nothing");
    // A kill between a batch's items and its call leaves the call out: redo it, as a
    // resuming pipeline would (storing a call twice is a no-op).
    if let Some(last) = (done / CRASH_BATCH).checked_sub(1) {
        store.put_call(&crash_call(last)).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for batch in done / CRASH_BATCH..done / CRASH_BATCH + 20_000 {
        if Instant::now() > deadline {
            break;
        }
        store.put_items(&crash_items(batch)).unwrap();
        store.put_call(&crash_call(batch)).unwrap();
    }
}

/// Check that the store holds a whole number of complete batches `0..n`, and the
/// calls `0..n` or `0..n-1` (the writer stores a batch's call after its items), and
/// return `n`.
fn verify_crashed_store(dir: &Path) -> usize {
    let store = Store::open_existing(dir).unwrap();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let items = store.items(CRASH_STAGE, None).unwrap(); // every row deserializes
    assert_eq!(items.len() % CRASH_BATCH, 0, "a batch was partly stored: {} items", items.len());
    let batches = items.len() / CRASH_BATCH;
    for (chunk, batch) in items.chunks(CRASH_BATCH).zip(0..) {
        assert_eq!(chunk, crash_items(batch), "batch {batch} is not as written");
    }
    for batch in 0..batches.saturating_sub(1) {
        let call = crash_call(batch);
        let got =
            store.get_call(&call.key).unwrap().unwrap_or_else(|| panic!("call of batch {batch} missing"));
        assert_eq!(got.response, call.response);
    }
    assert_eq!(store.get_call(&crash_call(batches).key).unwrap(), None, "a call without its batch");
    let calls = store.role_stats().unwrap().first().map_or(0, |s| s.calls) as usize;
    assert!(calls == batches || calls + 1 == batches, "{calls} calls for {batches} batches");
    batches
}

#[test]
fn sigkill_leaves_the_store_consistent() {
    use std::hash::{BuildHasher, RandomState};
    use std::process::{Command, Stdio};

    let dir = run_dir();
    let mut batches = 0;
    for round in 0..5 {
        let target = batches + 40;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_writer_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CRASH_WRITER_ENV, dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the crash writer");

        // Wait until the writer has stored `target` batches, reading alongside it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: the writer exited on its own ({status}) before it was killed");
            }
            assert!(Instant::now() < deadline, "round {round}: the writer made no progress in 60 s");
            let stored = match Store::open_existing(dir.path()) {
                Ok(s) => s.count_items(CRASH_STAGE).unwrap().values().sum::<u64>() as usize,
                Err(StoreError::NotARunDir { .. }) => 0,
                Err(e) => panic!("{e}"),
            };
            if stored >= target * CRASH_BATCH {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // Kill at a random moment a few milliseconds later, most likely mid-transaction.
        std::thread::sleep(Duration::from_micros(RandomState::new().hash_one(round) % 20_000));
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().unwrap();
        assert!(!status.success(), "round {round}: the writer was not killed: {status}");

        let now = verify_crashed_store(dir.path());
        assert!(now >= target, "round {round}: {now} batches, expected at least {target}");
        batches = now;
    }
}
