//! Pipeline work items, keyed by `(stage, item_id)`, so that a run can resume.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};

use crate::{now_unix_ms, Store, StoreError};

/// Where a work item stands. Stored as its [`as_str`](ItemState::as_str) name.
///
/// The order (for `BTreeMap` keys) is the declaration order below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemState {
    /// Not started, or sent back to be tried again.
    Pending,
    /// Taken by a worker. After a crash, [`Store::requeue_running`] sends these back.
    Running,
    /// Finished; its output is in the payload or in later stages.
    Done,
    /// Given up on, with the reason in [`WorkItem::error`].
    Failed,
    /// Deliberately left out (filtered, deduplicated, over budget).
    Dropped,
}

impl ItemState {
    /// Every state, in order.
    pub const ALL: [ItemState; 5] =
        [ItemState::Pending, ItemState::Running, ItemState::Done, ItemState::Failed, ItemState::Dropped];

    /// The state's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Running => "running",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
            ItemState::Dropped => "dropped",
        }
    }

    /// Whether the item needs no more work: done, failed or dropped.
    pub fn is_terminal(self) -> bool {
        matches!(self, ItemState::Done | ItemState::Failed | ItemState::Dropped)
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`ItemState::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown item state `{0}` (expected one of: pending, running, done, failed, dropped)")]
pub struct UnknownItemState(pub String);

impl FromStr for ItemState {
    type Err = UnknownItemState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ItemState::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| UnknownItemState(s.to_string()))
    }
}

/// One unit of a stage's work and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkItem {
    /// The stage, e.g. `expand` or `respond`.
    pub stage: String,
    /// The item's id within its stage. Items list in byte order of their ids, so
    /// zero-pad numbers (`item-00017`) where the order matters.
    pub item_id: String,
    /// Where it stands.
    pub state: ItemState,
    /// The stage's data for the item: inputs, and outputs once done.
    pub payload: serde_json::Value,
    /// Attempts so far.
    pub attempts: u32,
    /// Why it failed or was dropped, if it did or was.
    pub error: Option<String>,
    /// Last change, in milliseconds since the Unix epoch. Stored as given.
    pub updated_at_unix_ms: i64,
}

impl WorkItem {
    /// A pending item with no attempts, stamped now.
    pub fn pending(
        stage: impl Into<String>,
        item_id: impl Into<String>,
        payload: serde_json::Value,
    ) -> WorkItem {
        WorkItem {
            stage: stage.into(),
            item_id: item_id.into(),
            state: ItemState::Pending,
            payload,
            attempts: 0,
            error: None,
            updated_at_unix_ms: now_unix_ms(),
        }
    }

    /// `stage/item_id`, as failure records and messages name an item.
    pub fn qualified_id(&self) -> String {
        format!("{}/{}", self.stage, self.item_id)
    }
}

/// The columns of an item row, in `SELECT` and `INSERT` order.
const ITEM_COLUMNS: &str = "stage, item_id, state, payload_json, attempts, error, updated_at_unix_ms";

const UPSERT_ITEM: &str = "INSERT INTO items (stage, item_id, state, payload_json, attempts, error, \
     updated_at_unix_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (stage, item_id) DO UPDATE SET state = excluded.state, \
     payload_json = excluded.payload_json, attempts = excluded.attempts, error = excluded.error, \
     updated_at_unix_ms = excluded.updated_at_unix_ms";

/// An item row as read, before its state and payload are parsed (outside the lock).
struct RawItem {
    stage: String,
    item_id: String,
    state: String,
    payload_json: String,
    attempts: u32,
    error: Option<String>,
    updated_at_unix_ms: i64,
}

impl RawItem {
    fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawItem> {
        Ok(RawItem {
            stage: r.get(0)?,
            item_id: r.get(1)?,
            state: r.get(2)?,
            payload_json: r.get(3)?,
            attempts: r.get(4)?,
            error: r.get(5)?,
            updated_at_unix_ms: r.get(6)?,
        })
    }
}

impl Store {
    /// Insert an item or replace the one with the same `(stage, item_id)`.
    pub fn put_item(&self, item: &WorkItem) -> Result<(), StoreError> {
        self.put_items(std::slice::from_ref(item))
    }

    /// Insert or replace many items in one transaction: after a crash, either all of
    /// them are stored or none.
    pub fn put_items(&self, items: &[WorkItem]) -> Result<(), StoreError> {
        let payloads = items
            .iter()
            .map(|item| {
                serde_json::to_string(&item.payload).map_err(|source| StoreError::Serialize {
                    what: format!("payload of item {}", item.qualified_id()),
                    source,
                })
            })
            .collect::<Result<Vec<String>, StoreError>>()?;
        let subject = match items {
            [] => return Ok(()),
            [one] => one.qualified_id(),
            [first, ..] => format!("{} and {} more", first.qualified_id(), items.len() - 1),
        };

        let mut conn = self.lock();
        let write = |conn: &mut rusqlite::Connection| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached(UPSERT_ITEM)?;
                for (item, payload) in items.iter().zip(&payloads) {
                    stmt.execute(rusqlite::params![
                        item.stage,
                        item.item_id,
                        item.state.as_str(),
                        payload,
                        item.attempts,
                        item.error,
                        item.updated_at_unix_ms,
                    ])?;
                }
            }
            tx.commit()
        };
        write(&mut conn).map_err(self.sql_err("store item", Some(&subject)))
    }

    /// The item `stage/item_id`, if stored.
    pub fn get_item(&self, stage: &str, item_id: &str) -> Result<Option<WorkItem>, StoreError> {
        let subject = format!("{stage}/{item_id}");
        let raw = {
            let conn = self.lock();
            conn.prepare_cached(&format!(
                "SELECT {ITEM_COLUMNS} FROM items WHERE stage = ?1 AND item_id = ?2"
            ))
            .and_then(|mut s| s.query_row([stage, item_id], RawItem::from_row).optional())
            .map_err(self.sql_err("read item", Some(&subject)))?
        };
        raw.map(|r| self.parse_item(r)).transpose()
    }

    /// The items of `stage`, all or only those in `state`, ordered by `item_id`.
    pub fn items(&self, stage: &str, state: Option<ItemState>) -> Result<Vec<WorkItem>, StoreError> {
        let raw: Vec<RawItem> = {
            let conn = self.lock();
            let result = match state {
                None => conn
                    .prepare_cached(&format!(
                        "SELECT {ITEM_COLUMNS} FROM items WHERE stage = ?1 ORDER BY item_id"
                    ))
                    .and_then(|mut s| s.query_map([stage], RawItem::from_row)?.collect()),
                Some(st) => conn
                    .prepare_cached(&format!(
                        "SELECT {ITEM_COLUMNS} FROM items WHERE stage = ?1 AND state = ?2 ORDER BY item_id"
                    ))
                    .and_then(|mut s| s.query_map([stage, st.as_str()], RawItem::from_row)?.collect()),
            };
            result.map_err(self.sql_err("read items of stage", Some(stage)))?
        };
        raw.into_iter().map(|r| self.parse_item(r)).collect()
    }

    /// How many items of `stage` are in each state. Every state is present, with 0
    /// where there are none.
    pub fn count_items(&self, stage: &str) -> Result<BTreeMap<ItemState, u64>, StoreError> {
        let rows: Vec<(String, i64)> = {
            let conn = self.lock();
            conn.prepare_cached("SELECT state, COUNT(*) FROM items WHERE stage = ?1 GROUP BY state")
                .and_then(|mut s| s.query_map([stage], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
                .map_err(self.sql_err("count items of stage", Some(stage)))?
        };
        let mut counts: BTreeMap<ItemState, u64> = ItemState::ALL.into_iter().map(|s| (s, 0)).collect();
        for (state, n) in rows {
            let state = ItemState::from_str(&state)
                .map_err(|e| self.corrupt(format!("item state in stage `{stage}`"), e))?;
            counts.insert(state, crate::to_u64(n));
        }
        Ok(counts)
    }

    /// The stages that have items, in byte order.
    pub fn stages(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock();
        conn.prepare_cached("SELECT DISTINCT stage FROM items ORDER BY stage")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .map_err(self.sql_err("list stages", None))
    }

    /// Send every `running` item of `stage` back to `pending`, for a run that resumes
    /// after a crash left them taken by workers that no longer exist. Returns how
    /// many were sent back.
    pub fn requeue_running(&self, stage: &str) -> Result<u64, StoreError> {
        let now = now_unix_ms();
        let conn = self.lock();
        conn.prepare_cached(
            "UPDATE items SET state = 'pending', updated_at_unix_ms = ?2 WHERE stage = ?1 AND state = 'running'",
        )
        .and_then(|mut s| s.execute(rusqlite::params![stage, now]))
        .map(|n| n as u64)
        .map_err(self.sql_err("requeue running items of stage", Some(stage)))
    }

    fn parse_item(&self, raw: RawItem) -> Result<WorkItem, StoreError> {
        let what = |field: &str| format!("{field} of item {}/{}", raw.stage, raw.item_id);
        let state = ItemState::from_str(&raw.state).map_err(|e| self.corrupt(what("state"), e))?;
        let payload =
            serde_json::from_str(&raw.payload_json).map_err(|e| self.corrupt(what("payload"), e))?;
        Ok(WorkItem {
            stage: raw.stage,
            item_id: raw.item_id,
            state,
            payload,
            attempts: raw.attempts,
            error: raw.error,
            updated_at_unix_ms: raw.updated_at_unix_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_order() {
        for st in ItemState::ALL {
            assert_eq!(st.as_str().parse::<ItemState>().unwrap(), st);
            assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
        }
        assert!(ItemState::Pending < ItemState::Running && ItemState::Done < ItemState::Dropped);
        assert!("finished".parse::<ItemState>().is_err());
        assert!(ItemState::Dropped.is_terminal() && !ItemState::Running.is_terminal());
    }

    #[test]
    fn qualified_id_joins_stage_and_id() {
        let item = WorkItem::pending("expand", "leaf-007", serde_json::json!({}));
        assert_eq!(item.qualified_id(), "expand/leaf-007");
        assert_eq!((item.state, item.attempts), (ItemState::Pending, 0));
    }
}
