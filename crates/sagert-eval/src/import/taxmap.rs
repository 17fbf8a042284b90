//! Mapping a source dataset's harm labels onto the taxonomy's micro categories.
//!
//! The taxonomy maps each micro category (`macro/micro`) to lists of
//! PKU-SafeRLHF, HarmBench and MLCommons categories (`sagert taxonomy map`).
//! Importers need the other direction, a record's labels to one micro category,
//! and use two rules:
//!
//! - **Direct** ([`CategoryMap::direct`]): a label that names a micro category
//!   itself, as its ALERT label (`crime_cyber`), its path (`crime/cyber`) or the
//!   path of one of its leaves (`crime/cyber/account_takeover`). ASCII case and
//!   surrounding whitespace are ignored. ALERT's truncated `crime_kidnapp` is
//!   accepted for `crime_kidnapping` (see [`ALERT_ALIASES`]). ALERT uses this
//!   rule only; TRL files, plain prompt files and PyRIT seeds try it first.
//! - **Inverse** ([`CategoryMap::inverse`]): for every micro category, count how
//!   many of the record's distinct labels appear in its mapping lists for the
//!   given targets (exact spelling, ASCII case ignored). The micro category with
//!   the most hits wins; ties go to the one with the fewest mapped entries in
//!   those targets (the most specific), then to the first in taxonomy order.
//!   Labels that appear in no mapping are ignored.
//!
//! - **PyRIT harm categories** ([`CategoryMap::pyrit_harm`]): the
//!   `harm_category` of PyRIT's human-scored harm files names one harm area, not
//!   a taxonomy category; [`PYRIT_HARM_ALIASES`] names the micro category that
//!   fits best (the table is in [`super::pyrit_harm`]'s docs). Other labels go
//!   through the direct rule; no inverse rule, whose guesses for lone generic
//!   labels (below) would be worse than `unmapped`.
//!
//! - **PyRIT seeds** ([`CategoryMap::pyrit_seed`]): AdvBench as PyRIT ships it
//!   carries labels of another harm taxonomy; [`PYRIT_SEED_ALIASES`] maps the
//!   telling ones, most specific first.
//!
//! A record with no labels, or none that matches, is **unmapped**: its
//! `category` is `"unmapped"` and its `macro_category` is empty. The source
//! labels are always kept in the record's `source_categories`, so a mapping can
//! be redone later.
//!
//! The tie-breaks are a guess where one generic label is shared by many micro
//! categories: PKU's `Discriminatory Behavior` alone gives `hate/body`, the
//! first of eight `hate/*` categories mapped to it; HarmBench's `illegal` alone
//! gives `crime/kidnapping`; over all targets (plain files, PyRIT seeds) a lone
//! `illegal` gives `crime/privacy` and a lone `violence` `crime/kidnapping`.
//! Reports that need finer categories should group such sources by
//! `source_categories`.

use sagert_taxonomy::{MappingTarget, Taxonomy};

/// The category written for a record that maps to no micro category.
pub const UNMAPPED: &str = "unmapped";

/// ALERT labels spelled differently in ALERT's data than the taxonomy's
/// `{macro}_{micro}` labels: (ALERT's spelling, the taxonomy's label).
pub const ALERT_ALIASES: [(&str, &str); 1] = [("crime_kidnapp", "crime_kidnapping")];

/// PyRIT's harm-file `harm_category` values (ASCII case ignored) and the micro
/// category each is mapped to; see [`super::pyrit_harm`] for why.
pub const PYRIT_HARM_ALIASES: [(&str, &str); 10] = [
    ("exploits", "crime/cyber"),
    ("hate_speech", "hate/other"),
    ("information_integrity", "crime/propaganda"),
    ("info_integrity", "crime/propaganda"),
    ("privacy", "crime/privacy"),
    ("representational", "hate/other"),
    ("self_harm", "self_harm/other"),
    ("sexual", "sex/porn"),
    ("sexual_content", "sex/porn"),
    ("violence", "crime/injury"),
];

/// One micro category with what the rules match against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicroEntry {
    /// The macro category's id (`crime`).
    pub macro_id: String,
    /// The micro category's path (`crime/cyber`).
    pub path: String,
    /// Its ALERT label (`crime_cyber`).
    pub alert_label: String,
    /// Its mapping lists, indexed like [`MappingTarget::ALL`].
    mapped: [Vec<String>; 3],
}

/// The taxonomy's micro categories, ready for the direct and inverse rules.
#[derive(Debug, Clone)]
pub struct CategoryMap {
    micros: Vec<MicroEntry>,
}

impl CategoryMap {
    /// The micro categories of `taxonomy`, in taxonomy order.
    pub fn new(taxonomy: &Taxonomy) -> CategoryMap {
        let micros = taxonomy
            .macros
            .iter()
            .flat_map(|macro_cat| {
                macro_cat.micros.iter().map(move |micro| MicroEntry {
                    macro_id: macro_cat.id.clone(),
                    path: format!("{}/{}", macro_cat.id, micro.id),
                    alert_label: micro.alert_label(&macro_cat.id),
                    mapped: MappingTarget::ALL.map(|t| micro.mappings.get(t).to_vec()),
                })
            })
            .collect();
        CategoryMap { micros }
    }

    /// The micro category `label` names directly: an ALERT label (or one of
    /// [`ALERT_ALIASES`]), a micro path or a leaf path.
    pub fn direct(&self, label: &str) -> Option<&MicroEntry> {
        let wanted = label.trim().trim_matches('/').to_ascii_lowercase();
        if wanted.is_empty() {
            return None;
        }
        let wanted =
            ALERT_ALIASES.iter().find(|(alias, _)| *alias == wanted).map_or(wanted, |(_, l)| l.to_string());
        let micro_path = match wanted.split('/').count() {
            3 => wanted.rsplit_once('/').map_or(wanted.as_str(), |(micro, _)| micro),
            _ => wanted.as_str(),
        };
        self.micros.iter().find(|m| m.alert_label == wanted || m.path == micro_path)
    }

    /// The micro category of a PyRIT harm-file `harm_category`: its entry in
    /// [`PYRIT_HARM_ALIASES`], else the direct rule. `None` when neither names a
    /// micro category of this taxonomy.
    pub fn pyrit_harm(&self, label: &str) -> Option<&MicroEntry> {
        let wanted = label.trim();
        match PYRIT_HARM_ALIASES.iter().find(|(alias, _)| alias.eq_ignore_ascii_case(wanted)) {
            Some((_, path)) => self.direct(path),
            None => self.direct(wanted),
        }
    }

    /// The micro category whose mappings for `targets` contain the most of
    /// `labels` (see the module docs for the tie-breaks); `None` when no label
    /// appears in any mapping.
    pub fn inverse(&self, labels: &[String], targets: &[MappingTarget]) -> Option<&MicroEntry> {
        let mut wanted: Vec<String> = labels.iter().map(|l| l.trim().to_ascii_lowercase()).collect();
        wanted.sort();
        wanted.dedup();
        let mut best: Option<(usize, usize, &MicroEntry)> = None;
        for micro in &self.micros {
            let mut mapped: Vec<String> = MappingTarget::ALL
                .iter()
                .zip(&micro.mapped)
                .filter(|(t, _)| targets.contains(t))
                .flat_map(|(_, list)| list.iter().map(|c| c.to_ascii_lowercase()))
                .collect();
            mapped.sort();
            mapped.dedup();
            let hits = wanted.iter().filter(|l| mapped.binary_search(l).is_ok()).count();
            if hits == 0 {
                continue;
            }
            let better = match best {
                None => true,
                Some((best_hits, best_len, _)) => {
                    hits > best_hits || (hits == best_hits && mapped.len() < best_len)
                }
            };
            if better {
                best = Some((hits, mapped.len(), micro));
            }
        }
        best.map(|(_, _, micro)| micro)
    }

    /// The micro category of a PyRIT seed's labels: `direct` on each label
    /// first, then the first entry of [`PYRIT_SEED_ALIASES`] a label matches,
    /// then `inverse` over all targets.
    pub fn pyrit_seed(&self, labels: &[String]) -> Option<&MicroEntry> {
        labels.iter().find_map(|l| self.direct(l)).or_else(|| {
            PYRIT_SEED_ALIASES
                .iter()
                .find(|(alias, _)| labels.iter().any(|l| l.trim().eq_ignore_ascii_case(alias)))
                .and_then(|(_, path)| self.direct(path))
                .or_else(|| self.inverse(labels, &MappingTarget::ALL))
        })
    }

    /// `direct` on each label first, then `inverse` over all of them.
    pub fn resolve(&self, labels: &[String], targets: &[MappingTarget]) -> Option<&MicroEntry> {
        labels.iter().find_map(|l| self.direct(l)).or_else(|| self.inverse(labels, targets))
    }
}

/// The harm labels of PyRIT's seed files (AdvBench as PyRIT ships it: the
/// "Collaborative, Human-Centered Taxonomy of AI Harms", arXiv:2407.01294) that
/// point to one micro category, most specific first: a seed takes the micro
/// category of the first entry any of its labels matches (ASCII case
/// ignored). These labels name kinds of impact, not domains, so the table is a
/// judgement call, kept to labels that say enough: "Critical infrastructure
/// damage" on a request is nearly always hacking, "Violence/armed conflict" a
/// weapon. Broad labels ("Financial and Business", "Physical", "Psychological")
/// decide nothing.
pub const PYRIT_SEED_ALIASES: [(&str, &str); 24] = [
    ("Self-harm", "self_harm/other"),
    ("Addiction", "substance/drug"),
    ("Sexualisation", "sex/other"),
    ("Radicalisation", "crime/propaganda"),
    ("Electoral interference", "crime/propaganda"),
    ("Political manipulation", "crime/propaganda"),
    ("Dehumanisation/objectification", "hate/other"),
    ("Discrimination", "hate/other"),
    ("Stereotyping", "hate/other"),
    ("Critical infrastructure damage", "crime/cyber"),
    ("Business operations/infrastructure damage", "crime/cyber"),
    ("Impersonation/identity theft", "crime/privacy"),
    ("Violence/armed conflict", "weapon/other"),
    ("Bodily injury", "crime/injury"),
    ("Loss of life", "crime/injury"),
    ("Privacy loss", "crime/privacy"),
    ("Confidentiality loss", "crime/privacy"),
    ("IP/copyright loss", "crime/theft"),
    ("Cheating/plagiarism", "crime/theft"),
    ("Information degradation", "crime/propaganda"),
    ("Financial/earnings loss", "crime/theft"),
    ("Property damage", "crime/other"),
    ("Environmental", "crime/other"),
    ("Pollution", "crime/other"),
];

/// `(category, macro_category)` for a resolved micro category or [`UNMAPPED`].
pub fn category_columns(micro: Option<&MicroEntry>) -> (String, String) {
    match micro {
        Some(m) => (m.path.clone(), m.macro_id.clone()),
        None => (UNMAPPED.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyrit_seed_labels_take_the_most_specific_alias() {
        let map = CategoryMap::new(&Taxonomy::builtin());
        for (alias, wanted) in PYRIT_SEED_ALIASES {
            assert_eq!(path(map.direct(wanted)), Some(wanted), "{alias} -> {wanted} is a micro category");
        }
        // AdvBench's first seed: hacking, labelled with both infrastructure and
        // confidentiality; infrastructure comes first.
        let hacking = labels(&[
            "Financial and Business",
            "Business operations/infrastructure damage",
            "Confidentiality loss",
            "Violence/armed conflict",
        ]);
        assert_eq!(path(map.pyrit_seed(&hacking)), Some("crime/cyber"));
        assert_eq!(path(map.pyrit_seed(&labels(&["Physical", "bodily injury"]))), Some("crime/injury"));
        assert_eq!(path(map.pyrit_seed(&labels(&["Financial and Business", "Physical"]))), None);
        assert_eq!(
            path(map.pyrit_seed(&labels(&["Privacy loss", "hate_women"]))),
            Some("hate/women"),
            "direct first"
        );
    }

    fn labels(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    fn path(m: Option<&MicroEntry>) -> Option<&str> {
        m.map(|m| m.path.as_str())
    }

    #[test]
    fn direct_accepts_alert_labels_paths_and_the_alias() {
        let map = CategoryMap::new(&Taxonomy::builtin());
        assert_eq!(path(map.direct("crime_cyber")), Some("crime/cyber"));
        assert_eq!(path(map.direct(" Crime/Cyber/ ")), Some("crime/cyber"));
        assert_eq!(path(map.direct("crime/cyber/account_takeover")), Some("crime/cyber"));
        assert_eq!(path(map.direct("hate_lgbtq+")), Some("hate/lgbtq+"));
        assert_eq!(path(map.direct("self_harm_suicide")), Some("self_harm/suicide"));
        assert_eq!(path(map.direct("crime_kidnapp")), Some("crime/kidnapping"));
        assert_eq!(path(map.direct("crime_kidnapping")), Some("crime/kidnapping"));
        assert_eq!(path(map.direct("crime_unknown")), None);
        assert_eq!(path(map.direct("")), None);
    }

    #[test]
    fn pyrit_harm_categories_use_their_aliases_then_the_direct_rule() {
        let map = CategoryMap::new(&Taxonomy::builtin());
        for (alias, wanted) in PYRIT_HARM_ALIASES {
            assert_eq!(path(map.pyrit_harm(alias)), Some(wanted), "{alias}");
        }
        assert_eq!(path(map.pyrit_harm(" SEXUAL_CONTENT ")), Some("sex/porn"));
        assert_eq!(path(map.pyrit_harm("REPRESENTATIONAL")), Some("hate/other"));
        assert_eq!(path(map.pyrit_harm("crime_tax")), Some("crime/tax"));
        // No inverse guess for a label the table does not know.
        assert_eq!(path(map.pyrit_harm("illegal")), None);
        assert_eq!(path(map.pyrit_harm("")), None);
    }

    #[test]
    fn inverse_prefers_most_hits_then_fewest_entries_then_order() {
        let map = CategoryMap::new(&Taxonomy::builtin());
        let pku = [MappingTarget::Pku];
        assert_eq!(path(map.inverse(&labels(&["Cybercrime"]), &pku)), Some("crime/cyber"));
        // crime/injury (3 entries) and weapon/firearm (2) both hold both labels.
        assert_eq!(path(map.inverse(&labels(&["Violence", "Physical Harm"]), &pku)), Some("weapon/firearm"));
        // Three hits beat two.
        assert_eq!(
            path(map.inverse(&labels(&["Violence", "Physical Harm", "Animal Abuse"]), &pku)),
            Some("crime/injury")
        );
        // Equal lists: taxonomy order.
        assert_eq!(path(map.inverse(&labels(&["Discriminatory Behavior"]), &pku)), Some("hate/body"));
        // Labels of another target do not count.
        assert_eq!(path(map.inverse(&labels(&["cybercrime_intrusion"]), &pku)), None);
        let hb = [MappingTarget::Harmbench];
        assert_eq!(path(map.inverse(&labels(&["cybercrime_intrusion"]), &hb)), Some("crime/cyber"));
        assert_eq!(path(map.inverse(&labels(&["copyright"]), &hb)), Some("crime/theft"));
        assert_eq!(path(map.inverse(&labels(&["Financial and Business"]), &MappingTarget::ALL)), None);
        assert_eq!(path(map.inverse(&[], &MappingTarget::ALL)), None);
    }

    #[test]
    fn resolve_tries_direct_first() {
        let map = CategoryMap::new(&Taxonomy::builtin());
        let all = MappingTarget::ALL;
        assert_eq!(path(map.resolve(&labels(&["Drugs", "weapon_chemical"]), &all)), Some("weapon/chemical"));
        assert_eq!(path(map.resolve(&labels(&["S11"]), &all)), Some("self_harm/suicide"));
        assert_eq!(category_columns(None), (UNMAPPED.to_string(), String::new()));
    }
}
