//! Model calls and failures: the cache, the ledger and the statistics per role.

use std::collections::BTreeMap;
use std::str::FromStr;

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use sagert_backend::{BackendError, ChatRequest, ChatResponse, ModelRole};

use crate::{now_unix_ms, to_i64, to_u64, CallKey, Store, StoreError};

/// A successful call, as the engine hands it to [`Store::put_call`].
#[derive(Clone, Debug, PartialEq)]
pub struct CallRecord {
    /// The request's content hash, from [`crate::cache_key`].
    pub key: CallKey,
    /// The role the call was made for.
    pub role: ModelRole,
    /// The model id that went into the key.
    pub model: String,
    /// The endpoint that answered, by name (never with credentials).
    pub endpoint: String,
    /// The request.
    pub request: ChatRequest,
    /// The response.
    pub response: ChatResponse,
    /// Time from the first attempt to the answer.
    pub latency_ms: u64,
    /// Attempts made, retries and failover included.
    pub attempts: u32,
    /// What the call cost, in US dollars. A non-finite value is stored as 0.
    pub cost_usd: f64,
}

/// A call read back from the store by [`Store::get_call`].
#[derive(Clone, Debug, PartialEq)]
pub struct StoredCall {
    /// The stored response.
    pub response: ChatResponse,
    /// The role the call was first made for.
    pub role: ModelRole,
    /// The model id.
    pub model: String,
    /// The endpoint that answered first time.
    pub endpoint: String,
    /// When the call was stored, in milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Cache hits on this call so far, this one included.
    pub hits: u64,
    /// What the call cost when it was made (a hit costs nothing).
    pub cost_usd: f64,
}

/// A call that failed for good, for [`Store::record_failure`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The role the call was made for.
    pub role: ModelRole,
    /// The request's key, where there was a request.
    pub key: Option<CallKey>,
    /// The model id.
    pub model: String,
    /// A stable label: [`sagert_backend::FailureKind::label`] or [`BackendError::label`].
    pub label: String,
    /// What went wrong, for people.
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
    /// Time from the first attempt to giving up.
    pub elapsed_ms: u64,
    /// The work item, as `stage/item_id`, if the call was for one.
    pub item: Option<String>,
    /// When it failed, in milliseconds since the Unix epoch.
    pub at_unix_ms: i64,
}

impl FailureRecord {
    /// A record of `error`, now, with no key and no item (set them with struct
    /// update syntax). Attempts and elapsed time come from the error where it
    /// carries them; otherwise they are 1 and 0.
    pub fn from_error(role: ModelRole, model: &str, error: &BackendError) -> FailureRecord {
        let (attempts, elapsed_ms) = match error {
            BackendError::Request { attempts, elapsed, .. } => {
                (*attempts, u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
            }
            BackendError::Structured { repairs, .. } => (repairs + 1, 0),
            _ => (1, 0),
        };
        FailureRecord {
            role,
            key: None,
            model: model.to_string(),
            label: error.label(),
            message: error.to_string(),
            attempts,
            elapsed_ms,
            item: None,
            at_unix_ms: now_unix_ms(),
        }
    }
}

/// What one role's calls came to, from [`Store::role_stats`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoleStats {
    /// The role.
    pub role: ModelRole,
    /// Distinct calls stored (each was paid for once).
    pub calls: u64,
    /// Cache hits on those calls. A hit counts for the role that stored the call.
    pub cache_hits: u64,
    /// Prompt tokens over the stored calls.
    pub prompt_tokens: u64,
    /// Completion tokens over the stored calls.
    pub completion_tokens: u64,
    /// Cost over the stored calls, in US dollars.
    pub cost_usd: f64,
    /// Failures recorded.
    pub failures: u64,
    /// Failures by label.
    pub failures_by_label: BTreeMap<String, u64>,
}

impl RoleStats {
    fn empty(role: ModelRole) -> RoleStats {
        RoleStats {
            role,
            calls: 0,
            cache_hits: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            failures: 0,
            failures_by_label: BTreeMap::new(),
        }
    }
}

/// The columns of a failure row, in `SELECT` order.
const FAILURE_COLUMNS: &str = "role, call_key, model, label, message, attempts, elapsed_ms, item, at_unix_ms";

/// A failure row before its role is parsed (outside the lock).
struct RawFailure {
    role: String,
    rest: FailureRecord,
}

impl Store {
    /// The stored call with this key, if any, answered as a cache hit: the row's
    /// hit counter is incremented in the same statement (one transaction) that
    /// reads it. A row whose response does not deserialize is a
    /// [`StoreError::Corrupt`], not a miss.
    pub fn get_call(&self, key: &CallKey) -> Result<Option<StoredCall>, StoreError> {
        self.read_call(
            key,
            "UPDATE calls SET hits = hits + 1 WHERE key = ?1 \
             RETURNING response_json, role, model, endpoint, created_at_unix_ms, hits, cost_usd",
        )
    }

    /// The stored call with this key, if any, read without counting a cache hit:
    /// for exports and reports that read back what a run already has.
    pub fn peek_call(&self, key: &CallKey) -> Result<Option<StoredCall>, StoreError> {
        self.read_call(
            key,
            "SELECT response_json, role, model, endpoint, created_at_unix_ms, hits, cost_usd \
             FROM calls WHERE key = ?1",
        )
    }

    fn read_call(&self, key: &CallKey, sql: &str) -> Result<Option<StoredCall>, StoreError> {
        let short = key.short();
        let row = {
            let conn = self.lock();
            conn.prepare_cached(sql)
                .and_then(|mut s| {
                    s.query_row([key.as_str()], |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, i64>(4)?,
                            r.get::<_, i64>(5)?,
                            r.get::<_, f64>(6)?,
                        ))
                    })
                    .optional()
                })
                .map_err(self.sql_err("read call", Some(&short)))?
        };
        let Some((response_json, role, model, endpoint, created_at, hits, cost_usd)) = row else {
            return Ok(None);
        };
        let response = serde_json::from_str(&response_json)
            .map_err(|e| self.corrupt(format!("response of call {short}"), e))?;
        let role = self.parse_role(&role, || format!("role of call {short}"))?;
        Ok(Some(StoredCall { response, role, model, endpoint, created_at, hits: to_u64(hits), cost_usd }))
    }

    /// Store a successful call. A call already stored under the same key is kept as
    /// it is (`INSERT OR IGNORE`); the return value says whether this one was new.
    pub fn put_call(&self, record: &CallRecord) -> Result<bool, StoreError> {
        let short = record.key.short();
        let request_json = serde_json::to_string(&record.request)
            .map_err(|source| StoreError::Serialize { what: format!("request of call {short}"), source })?;
        let response_json = serde_json::to_string(&record.response)
            .map_err(|source| StoreError::Serialize { what: format!("response of call {short}"), source })?;
        let usage = record.response.usage;
        let cost = if record.cost_usd.is_finite() { record.cost_usd } else { 0.0 };
        let now = now_unix_ms();

        let conn = self.lock();
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO calls (key, role, model, endpoint, request_json, response_json, \
                 prompt_tokens, completion_tokens, cost_usd, latency_ms, attempts, hits, created_at_unix_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 0, ?12)",
            )
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    record.key.as_str(),
                    record.role.as_str(),
                    record.model,
                    record.endpoint,
                    request_json,
                    response_json,
                    to_i64(usage.prompt_tokens),
                    to_i64(usage.completion_tokens),
                    cost,
                    to_i64(record.latency_ms),
                    record.attempts,
                    now,
                ])
            })
            .map_err(self.sql_err("store call", Some(&short)))?;
        Ok(inserted == 1)
    }

    /// Record a call that failed for good.
    pub fn record_failure(&self, failure: &FailureRecord) -> Result<(), StoreError> {
        let conn = self.lock();
        conn.prepare_cached(&format!(
            "INSERT INTO failures ({FAILURE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
        ))
        .and_then(|mut s| {
            s.execute(rusqlite::params![
                failure.role.as_str(),
                failure.key.as_ref().map(CallKey::as_str),
                failure.model,
                failure.label,
                failure.message,
                failure.attempts,
                to_i64(failure.elapsed_ms),
                failure.item,
                failure.at_unix_ms,
            ])
        })
        .map(drop)
        .map_err(self.sql_err("record failure", Some(&failure.label)))
    }

    /// The most recent `limit` failures, newest (last recorded) first.
    pub fn failures(&self, limit: usize) -> Result<Vec<FailureRecord>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let raw: Vec<RawFailure> = {
            let conn = self.lock();
            conn.prepare_cached(&format!("SELECT {FAILURE_COLUMNS} FROM failures ORDER BY id DESC LIMIT ?1"))
                .and_then(|mut s| {
                    s.query_map([limit], |r| {
                        Ok(RawFailure {
                            role: r.get(0)?,
                            rest: FailureRecord {
                                role: ModelRole::Expander, // replaced below, once parsed
                                key: r.get::<_, Option<String>>(1)?.map(CallKey),
                                model: r.get(2)?,
                                label: r.get(3)?,
                                message: r.get(4)?,
                                attempts: r.get(5)?,
                                elapsed_ms: to_u64(r.get(6)?),
                                item: r.get(7)?,
                                at_unix_ms: r.get(8)?,
                            },
                        })
                    })?
                    .collect()
                })
                .map_err(self.sql_err("read failures", None))?
        };
        raw.into_iter()
            .map(|f| {
                let role = self.parse_role(&f.role, || format!("role of failure `{}`", f.rest.label))?;
                Ok(FailureRecord { role, ..f.rest })
            })
            .collect()
    }

    /// Calls, cache hits, tokens, cost and failures per role, for every role that
    /// has a stored call or a failure, in pipeline order ([`ModelRole::ALL`]).
    /// Both tables are read in one transaction, so the figures agree.
    pub fn role_stats(&self) -> Result<Vec<RoleStats>, StoreError> {
        type CallRow = (String, i64, i64, i64, i64, f64);
        let (call_rows, failure_rows) = {
            let mut conn = self.lock();
            let read = |conn: &mut rusqlite::Connection| -> rusqlite::Result<_> {
                let tx = conn.transaction()?;
                let calls: Vec<CallRow> = tx
                    .prepare_cached(
                        "SELECT role, COUNT(*), SUM(hits), SUM(prompt_tokens), \
                         SUM(completion_tokens), TOTAL(cost_usd) FROM calls GROUP BY role",
                    )?
                    .query_map([], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
                    })?
                    .collect::<rusqlite::Result<_>>()?;
                let failures: Vec<(String, String, i64)> = tx
                    .prepare_cached("SELECT role, label, COUNT(*) FROM failures GROUP BY role, label")?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?;
                tx.commit()?;
                Ok((calls, failures))
            };
            read(&mut conn).map_err(self.sql_err("read role statistics", None))?
        };

        let mut stats: BTreeMap<ModelRole, RoleStats> = BTreeMap::new();
        for (role, calls, hits, prompt, completion, cost) in call_rows {
            let role = self.parse_role(&role, || "role in the calls table".to_string())?;
            let s = stats.entry(role).or_insert_with(|| RoleStats::empty(role));
            s.calls = to_u64(calls);
            s.cache_hits = to_u64(hits);
            s.prompt_tokens = to_u64(prompt);
            s.completion_tokens = to_u64(completion);
            s.cost_usd = cost;
        }
        for (role, label, count) in failure_rows {
            let role = self.parse_role(&role, || "role in the failures table".to_string())?;
            let s = stats.entry(role).or_insert_with(|| RoleStats::empty(role));
            s.failures += to_u64(count);
            *s.failures_by_label.entry(label).or_default() += to_u64(count);
        }
        // `ModelRole`'s order is its declaration order, which is pipeline order.
        Ok(stats.into_values().collect())
    }

    fn parse_role(&self, name: &str, what: impl FnOnce() -> String) -> Result<ModelRole, StoreError> {
        ModelRole::from_str(name).map_err(|e| self.corrupt(what(), e))
    }
}
