//! The crate's error type and the validation [`Problem`] it carries.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// One thing wrong with a taxonomy file, found by validation.
///
/// `id` names the node: its path (`crime/cyber/account_takeover`) where one is known,
/// `taxonomy` for top-level keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line in the file.
    pub line: usize,
    /// The node the problem belongs to.
    pub id: String,
    /// What is wrong, in a sentence fragment.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.line, self.id, self.message)
    }
}

/// Everything that can go wrong loading or querying a taxonomy.
#[derive(Debug, thiserror::Error)]
pub enum TaxonomyError {
    /// The taxonomy file could not be read.
    #[error("cannot read taxonomy file {}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },

    /// The file is not valid TOML, or does not have the taxonomy's shape (unknown key,
    /// wrong type, missing `id`).
    #[error("{file}:{line}: {message}")]
    Parse {
        /// File name the source came from.
        file: String,
        /// 1-based line of the error.
        line: usize,
        /// The parser's message.
        message: String,
    },

    /// The file parsed but breaks the taxonomy's rules; every problem found is listed.
    #[error("{}", invalid_message(file, problems))]
    Invalid {
        /// File name the source came from.
        file: String,
        /// All problems, ordered by line.
        problems: Vec<Problem>,
    },

    /// A category prefix matched nothing.
    #[error("{}", unknown_message(prefix, suggestions))]
    UnknownCategory {
        /// The prefix as given.
        prefix: String,
        /// Close matches, best first (may be empty).
        suggestions: Vec<String>,
    },

    /// A mapping target name is not one of `pku`, `harmbench`, `mlcommons`.
    #[error("unknown mapping target `{value}` (expected pku, harmbench or mlcommons)")]
    UnknownTarget {
        /// The name as given.
        value: String,
    },
}

fn invalid_message(file: &str, problems: &[Problem]) -> String {
    let count = problems.len();
    let mut out = format!("invalid taxonomy {file} ({count} problem{}):", if count == 1 { "" } else { "s" });
    for problem in problems {
        out.push_str(&format!("\n{file}:{}: {}: {}", problem.line, problem.id, problem.message));
    }
    out
}

fn unknown_message(prefix: &str, suggestions: &[String]) -> String {
    if suggestions.is_empty() {
        format!("no taxonomy category matches `{prefix}`")
    } else {
        format!("no taxonomy category matches `{prefix}`; did you mean {}?", suggestions.join(", "))
    }
}

/// Levenshtein distance over characters, for "did you mean" suggestions.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("crime", "crime"), 0);
        assert_eq!(edit_distance("crim", "crime"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn invalid_lists_one_problem_per_line() {
        let err = TaxonomyError::Invalid {
            file: "t.toml".into(),
            problems: vec![
                Problem { line: 3, id: "a".into(), message: "first".into() },
                Problem { line: 9, id: "a/b".into(), message: "second".into() },
            ],
        };
        assert_eq!(
            err.to_string(),
            "invalid taxonomy t.toml (2 problems):\nt.toml:3: a: first\nt.toml:9: a/b: second"
        );
    }

    #[test]
    fn unknown_category_lists_suggestions() {
        let err = TaxonomyError::UnknownCategory { prefix: "crim".into(), suggestions: vec!["crime".into()] };
        assert_eq!(err.to_string(), "no taxonomy category matches `crim`; did you mean crime?");
    }
}
