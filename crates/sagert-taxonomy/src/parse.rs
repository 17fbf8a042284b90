//! Reading a taxonomy file: TOML into span-carrying raw structs, then validation
//! ([`crate::validate`]), then the plain model ([`crate::model`]).
//!
//! The file format (see `data/alert-sage.toml` for a full example):
//!
//! ```toml
//! name = "my-taxonomy"        # required
//! version = "1"               # optional
//! description = "..."         # optional
//!
//! [[macro]]
//! id = "crime"                # [a-z0-9_+], unique in the file
//! name = "Crime"
//! description = "..."
//!
//! [[macro.micro]]
//! id = "cyber"                # unique in its macro; ALERT label `crime_cyber`
//! name = "Cybercrime"
//! description = "..."
//! pku = ["Cybercrime"]        # optional mappings, values from crate::targets
//! harmbench = ["cybercrime_intrusion"]
//! mlcommons = ["S2", "S14"]
//! leaf = [                    # or one [[macro.micro.leaf]] table per leaf
//!   { id = "account_takeover", name = "Account takeover", description = "..." },
//! ]
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::model::{Leaf, MacroCategory, Mappings, MicroCategory, Taxonomy};
use crate::{validate, TaxonomyError};

/// An optional string that remembers where it was written.
pub(crate) type Text = Option<Spanned<String>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTaxonomy {
    #[serde(default)]
    pub name: Text,
    #[serde(default)]
    pub version: Text,
    #[serde(default)]
    pub description: Text,
    #[serde(default, rename = "macro")]
    pub macros: Vec<Spanned<RawMacro>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMacro {
    #[serde(default)]
    pub id: Text,
    #[serde(default)]
    pub name: Text,
    #[serde(default)]
    pub description: Text,
    #[serde(default, rename = "micro")]
    pub micros: Vec<Spanned<RawMicro>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMicro {
    #[serde(default)]
    pub id: Text,
    #[serde(default)]
    pub name: Text,
    #[serde(default)]
    pub description: Text,
    #[serde(default)]
    pub pku: Vec<Spanned<String>>,
    #[serde(default)]
    pub harmbench: Vec<Spanned<String>>,
    #[serde(default)]
    pub mlcommons: Vec<Spanned<String>>,
    #[serde(default, rename = "leaf")]
    pub leaves: Vec<Spanned<RawLeaf>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLeaf {
    #[serde(default)]
    pub id: Text,
    #[serde(default)]
    pub name: Text,
    #[serde(default)]
    pub description: Text,
}

/// Byte offset to 1-based line number.
pub(crate) struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    pub(crate) fn new(source: &str) -> Lines {
        let starts = std::iter::once(0).chain(source.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Lines { starts }
    }

    pub(crate) fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset).max(1)
    }
}

/// Parses, validates and converts; see [`crate::Taxonomy::parse`].
pub(crate) fn parse(source: &str, origin: &str) -> Result<Taxonomy, TaxonomyError> {
    let lines = Lines::new(source);
    let raw: RawTaxonomy = toml::from_str(source).map_err(|err| TaxonomyError::Parse {
        file: origin.to_string(),
        line: err.span().map_or(1, |span| lines.line(span.start)),
        message: err.message().trim().to_string(),
    })?;
    let problems = validate::check(&raw, &lines);
    if !problems.is_empty() {
        return Err(TaxonomyError::Invalid { file: origin.to_string(), problems });
    }
    Ok(convert(raw, origin))
}

fn text(value: Text) -> String {
    value.map(|v| v.into_inner().trim().to_string()).unwrap_or_default()
}

fn strings(values: Vec<Spanned<String>>) -> Vec<String> {
    values.into_iter().map(Spanned::into_inner).collect()
}

fn convert(raw: RawTaxonomy, origin: &str) -> Taxonomy {
    let macros = raw
        .macros
        .into_iter()
        .map(Spanned::into_inner)
        .map(|m| MacroCategory {
            id: text(m.id),
            name: text(m.name),
            description: text(m.description),
            micros: m
                .micros
                .into_iter()
                .map(Spanned::into_inner)
                .map(|u| MicroCategory {
                    id: text(u.id),
                    name: text(u.name),
                    description: text(u.description),
                    mappings: Mappings {
                        pku: strings(u.pku),
                        harmbench: strings(u.harmbench),
                        mlcommons: strings(u.mlcommons),
                    },
                    leaves: u
                        .leaves
                        .into_iter()
                        .map(Spanned::into_inner)
                        .map(|l| Leaf {
                            id: text(l.id),
                            name: text(l.name),
                            description: text(l.description),
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    Taxonomy {
        name: text(raw.name),
        version: text(raw.version),
        description: text(raw.description),
        macros,
        origin: origin.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let lines = Lines::new("a\nbc\n\nd");
        assert_eq!(lines.line(0), 1);
        assert_eq!(lines.line(1), 1);
        assert_eq!(lines.line(2), 2);
        assert_eq!(lines.line(5), 3);
        assert_eq!(lines.line(6), 4);
        assert_eq!(lines.line(100), 4);
    }

    #[test]
    fn table_spans_point_at_the_table() {
        let source = "name = \"t\"\n\n[[macro]]\nid = \"a\"\n\n[[macro.micro]]\nid = \"b\"\nleaf = [\n  { id = \"c\" },\n]\n";
        let raw: RawTaxonomy = toml::from_str(source).unwrap();
        let lines = Lines::new(source);
        let m = &raw.macros[0];
        assert_eq!(lines.line(m.span().start), 3);
        let u = &m.get_ref().micros[0];
        assert_eq!(lines.line(u.span().start), 6);
        assert_eq!(lines.line(u.get_ref().leaves[0].span().start), 9);
        assert_eq!(lines.line(u.get_ref().id.as_ref().unwrap().span().start), 7);
    }
}
