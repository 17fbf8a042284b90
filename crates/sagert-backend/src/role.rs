use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The part a model plays in a run. The configuration assigns a model and its
/// endpoints to each role; any role may use any backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelRole {
    /// Expands taxonomy leaves into concrete topics.
    Expander,
    /// Writes seed instructions, raw text and extracted queries.
    Generator,
    /// Writes the safe, *chosen* responses.
    SafeResponder,
    /// Writes the unsafe, *rejected* responses.
    UnsafeResponder,
    /// Validates items and scores responses.
    Judge,
    /// The model under evaluation or red-teaming.
    Target,
}

impl ModelRole {
    /// Every role, in pipeline order.
    pub const ALL: [ModelRole; 6] = [
        ModelRole::Expander,
        ModelRole::Generator,
        ModelRole::SafeResponder,
        ModelRole::UnsafeResponder,
        ModelRole::Judge,
        ModelRole::Target,
    ];

    /// The role's name as written in configuration files.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelRole::Expander => "expander",
            ModelRole::Generator => "generator",
            ModelRole::SafeResponder => "safe_responder",
            ModelRole::UnsafeResponder => "unsafe_responder",
            ModelRole::Judge => "judge",
            ModelRole::Target => "target",
        }
    }
}

impl fmt::Display for ModelRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of [`ModelRole::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown model role `{0}` (expected one of: expander, generator, safe_responder, unsafe_responder, judge, target)")]
pub struct UnknownRole(pub String);

impl FromStr for ModelRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelRole::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for role in ModelRole::ALL {
            assert_eq!(role.as_str().parse::<ModelRole>().unwrap(), role);
            let json = serde_json::to_string(&role).unwrap();
            assert_eq!(json, format!("\"{}\"", role.as_str()));
        }
        assert!("critic".parse::<ModelRole>().is_err());
    }
}
