//! Budgets and cost accounting, for every backend alike.
//!
//! A call reserves its worst case before it is sent (one request, its estimated
//! prompt tokens plus its `max_tokens`, and their price) and is refused if that
//! could cross a hard limit; when it returns, the reservation is replaced by
//! what it really used. So a budget is never exceeded, and calls near the limit
//! may be refused a little early. The ledger starts from what the run directory
//! has already paid for, so budgets hold across resumed sessions. Once a limit
//! refuses a call, the ledger stays stopped: the run ends cleanly.

use std::collections::BTreeMap;
use std::sync::Mutex;

use sagert_backend::Usage;
use sagert_config::{BudgetSection, Price};
use serde::Serialize;

/// Completion tokens assumed for a call that sets no `max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;

/// What has been spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Spent {
    /// Requests sent to backends (not answers from the store).
    pub requests: u64,
    /// Prompt plus completion tokens.
    pub tokens: u64,
    /// US dollars.
    pub cost_usd: f64,
}

/// Prices per model id; a model without a price costs nothing.
#[derive(Clone, Debug, Default)]
pub struct Prices(pub BTreeMap<String, Price>);

impl Prices {
    /// The cost of `usage` on `model`.
    pub fn cost(&self, model: &str, usage: Usage) -> f64 {
        self.0.get(model).map(|p| p.cost(usage.prompt_tokens, usage.completion_tokens)).unwrap_or(0.0)
    }
}

/// A reserved worst case, to be settled or released.
#[derive(Debug)]
#[must_use = "settle or release a reservation"]
pub struct Reservation {
    tokens: u64,
    cost_usd: f64,
}

#[derive(Debug, Default)]
struct State {
    spent: Spent,
    reserved_tokens: u64,
    reserved_cost: f64,
    stopped: Option<String>,
}

/// Counts requests, tokens and cost against the run's budget.
#[derive(Debug)]
pub struct Ledger {
    budget: BudgetSection,
    prices: Prices,
    state: Mutex<State>,
}

impl Ledger {
    /// A ledger that starts from what was already spent.
    pub fn new(budget: BudgetSection, prices: Prices, already: Spent) -> Self {
        Ledger { budget, prices, state: Mutex::new(State { spent: already, ..State::default() }) }
    }

    /// The prices in force.
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    /// Reserve one request with `prompt_tokens` estimated and up to
    /// `max_completion` generated, or say which limit it could cross.
    pub fn reserve(
        &self,
        model: &str,
        prompt_tokens: u64,
        max_completion: u64,
    ) -> Result<Reservation, String> {
        let worst = Usage { prompt_tokens, completion_tokens: max_completion };
        let tokens = worst.total();
        let cost_usd = self.prices.cost(model, worst);
        let mut st = self.state.lock().expect("ledger lock");
        if let Some(reason) = &st.stopped {
            return Err(reason.clone());
        }
        let refusal = if let Some(max) = self.budget.max_requests.filter(|&m| st.spent.requests + 1 > m) {
            Some(format!("max_requests = {max} reached ({} sent)", st.spent.requests))
        } else if let Some(max) =
            self.budget.max_tokens.filter(|&m| st.spent.tokens + st.reserved_tokens + tokens > m)
        {
            Some(format!(
                "max_tokens = {max} would be exceeded ({} used, {} in flight, next call up to {tokens})",
                st.spent.tokens, st.reserved_tokens
            ))
        } else {
            self.budget.max_cost_usd.filter(|&m| st.spent.cost_usd + st.reserved_cost + cost_usd > m).map(|max| {
                format!(
                    "max_cost_usd = {max} would be exceeded (${:.4} spent, ${:.4} in flight, next call up to ${cost_usd:.4})",
                    st.spent.cost_usd, st.reserved_cost
                )
            })
        };
        if let Some(reason) = refusal {
            st.stopped = Some(reason.clone());
            return Err(reason);
        }
        st.spent.requests += 1;
        st.reserved_tokens += tokens;
        st.reserved_cost += cost_usd;
        Ok(Reservation { tokens, cost_usd })
    }

    /// Replace a reservation by what the call used; returns the call's cost.
    pub fn settle(&self, reservation: Reservation, model: &str, usage: Usage) -> f64 {
        let cost = self.prices.cost(model, usage);
        let mut st = self.state.lock().expect("ledger lock");
        st.reserved_tokens -= reservation.tokens;
        st.reserved_cost -= reservation.cost_usd;
        st.spent.tokens += usage.total();
        st.spent.cost_usd += cost;
        cost
    }

    /// Drop a reservation whose call failed (the request still counts).
    pub fn release(&self, reservation: Reservation) {
        let mut st = self.state.lock().expect("ledger lock");
        st.reserved_tokens -= reservation.tokens;
        st.reserved_cost -= reservation.cost_usd;
    }

    /// What has been spent so far.
    pub fn spent(&self) -> Spent {
        self.state.lock().expect("ledger lock").spent
    }

    /// Why the ledger stopped the run, if it did.
    pub fn stop_reason(&self) -> Option<String> {
        self.state.lock().expect("ledger lock").stopped.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prices() -> Prices {
        Prices([("m".to_string(), Price { input_per_mtok: 1.0, output_per_mtok: 2.0 })].into())
    }

    #[test]
    fn request_limit_is_hard_and_sticky() {
        let l = Ledger::new(
            BudgetSection { max_requests: Some(2), ..Default::default() },
            prices(),
            Spent::default(),
        );
        let a = l.reserve("m", 10, 10).unwrap();
        let b = l.reserve("m", 10, 10).unwrap();
        let err = l.reserve("m", 10, 10).unwrap_err();
        assert!(err.contains("max_requests = 2"), "{err}");
        l.settle(a, "m", Usage { prompt_tokens: 10, completion_tokens: 5 });
        l.release(b);
        assert_eq!(l.spent().requests, 2);
        assert_eq!(l.spent().tokens, 15);
        assert!(l.reserve("other", 1, 1).is_err(), "stays stopped");
        assert!(l.stop_reason().is_some());
    }

    #[test]
    fn tokens_and_cost_count_reservations_in_flight() {
        let l = Ledger::new(
            BudgetSection { max_tokens: Some(1000), ..Default::default() },
            prices(),
            Spent::default(),
        );
        let a = l.reserve("m", 100, 400).unwrap();
        assert!(l.reserve("m", 100, 400).is_ok());
        assert!(l.reserve("m", 100, 400).is_err(), "1500 worst case > 1000");
        let cost = l.settle(a, "m", Usage { prompt_tokens: 100, completion_tokens: 50 });
        assert!((cost - (100.0 * 1.0 + 50.0 * 2.0) / 1e6).abs() < 1e-12);

        let l = Ledger::new(
            BudgetSection { max_cost_usd: Some(0.001), ..Default::default() },
            prices(),
            Spent { requests: 3, tokens: 10, cost_usd: 0.0009 },
        );
        let err = l.reserve("m", 100, 100).unwrap_err();
        assert!(err.contains("max_cost_usd"), "{err}");
        assert!(Ledger::new(BudgetSection::default(), prices(), Spent::default())
            .reserve("free", 1 << 40, 1)
            .is_ok());
    }
}
