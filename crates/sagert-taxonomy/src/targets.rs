//! The neighbouring taxonomies a micro category can be mapped to (SAGE.md section 4).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::TaxonomyError;

/// PKU-SafeRLHF's 19 harm categories, exactly as that dataset spells them.
pub const PKU_CATEGORIES: [&str; 19] = [
    "Animal Abuse",
    "Copyright Issues",
    "Cybercrime",
    "Discriminatory Behavior",
    "Disrupting Public Order",
    "Drugs",
    "Economic Crime",
    "Endangering National Security",
    "Endangering Public Health",
    "Environmental Damage",
    "Human Trafficking",
    "Insulting Behavior",
    "Mental Manipulation",
    "Physical Harm",
    "Privacy Violation",
    "Psychological Harm",
    "Sexual Content",
    "Violence",
    "White-Collar Crime",
];

/// HarmBench's semantic categories.
pub const HARMBENCH_CATEGORIES: [&str; 7] = [
    "chemical_biological",
    "cybercrime_intrusion",
    "harassment_bullying",
    "illegal",
    "misinformation_disinformation",
    "harmful",
    "copyright",
];

/// MLCommons hazard codes with their names, as used by Llama Guard 3.
pub const MLCOMMONS_HAZARDS: [(&str, &str); 14] = [
    ("S1", "violent crimes"),
    ("S2", "non-violent crimes"),
    ("S3", "sex-related crimes"),
    ("S4", "child sexual exploitation"),
    ("S5", "defamation"),
    ("S6", "specialized advice"),
    ("S7", "privacy"),
    ("S8", "intellectual property"),
    ("S9", "indiscriminate weapons"),
    ("S10", "hate"),
    ("S11", "suicide and self-harm"),
    ("S12", "sexual content"),
    ("S13", "elections"),
    ("S14", "code interpreter abuse"),
];

/// A taxonomy that micro categories are mapped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingTarget {
    /// PKU-SafeRLHF's 19 harm categories.
    Pku,
    /// HarmBench's semantic categories.
    Harmbench,
    /// MLCommons hazards S1..S14.
    Mlcommons,
}

impl MappingTarget {
    /// All targets, in the order reports list them.
    pub const ALL: [MappingTarget; 3] =
        [MappingTarget::Pku, MappingTarget::Harmbench, MappingTarget::Mlcommons];

    /// The key used in taxonomy files and on the command line.
    pub fn key(self) -> &'static str {
        match self {
            MappingTarget::Pku => "pku",
            MappingTarget::Harmbench => "harmbench",
            MappingTarget::Mlcommons => "mlcommons",
        }
    }

    /// The human name of the target taxonomy.
    pub fn title(self) -> &'static str {
        match self {
            MappingTarget::Pku => "PKU-SafeRLHF",
            MappingTarget::Harmbench => "HarmBench",
            MappingTarget::Mlcommons => "MLCommons",
        }
    }

    /// The target's category values as written in a mapping (MLCommons: the codes).
    pub fn categories(self) -> Vec<&'static str> {
        match self {
            MappingTarget::Pku => PKU_CATEGORIES.to_vec(),
            MappingTarget::Harmbench => HARMBENCH_CATEGORIES.to_vec(),
            MappingTarget::Mlcommons => MLCOMMONS_HAZARDS.iter().map(|(code, _)| *code).collect(),
        }
    }

    /// Whether `value` is one of this target's categories (exact spelling).
    pub fn is_valid(self, value: &str) -> bool {
        self.categories().contains(&value)
    }

    /// A category with its explanation where the value alone is terse
    /// (`S2` -> `S2 non-violent crimes`); other targets' values are returned as is.
    pub fn describe(self, value: &str) -> String {
        match self {
            MappingTarget::Mlcommons => match MLCOMMONS_HAZARDS.iter().find(|(code, _)| *code == value) {
                Some((code, name)) => format!("{code} {name}"),
                None => value.to_string(),
            },
            _ => value.to_string(),
        }
    }
}

impl fmt::Display for MappingTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for MappingTarget {
    type Err = TaxonomyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MappingTarget::ALL
            .into_iter()
            .find(|target| target.key().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| TaxonomyError::UnknownTarget { value: s.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_round_trip_through_their_keys() {
        for target in MappingTarget::ALL {
            assert_eq!(target.key().parse::<MappingTarget>().unwrap(), target);
            assert_eq!(target.to_string(), target.key());
        }
        assert_eq!("PKU".parse::<MappingTarget>().unwrap(), MappingTarget::Pku);
        let err = "llamaguard".parse::<MappingTarget>().unwrap_err();
        assert!(matches!(err, TaxonomyError::UnknownTarget { ref value } if value == "llamaguard"));
    }

    #[test]
    fn categories_and_validity() {
        assert_eq!(MappingTarget::Mlcommons.categories().len(), 14);
        assert!(MappingTarget::Mlcommons.is_valid("S14"));
        assert!(!MappingTarget::Mlcommons.is_valid("S15"));
        assert!(MappingTarget::Pku.is_valid("White-Collar Crime"));
        assert!(!MappingTarget::Pku.is_valid("white-collar crime"));
        assert_eq!(MappingTarget::Mlcommons.describe("S10"), "S10 hate");
        assert_eq!(MappingTarget::Harmbench.describe("illegal"), "illegal");
    }
}
