//! Behaviour tests: the built-in taxonomy's shape, validation errors with their lines,
//! selection, and the renderers' exact output on a tiny fixture.

use std::collections::HashSet;

use sagert_taxonomy::{
    render_mapping, render_stats, render_tree, MappingTarget, Problem, Taxonomy, TaxonomyError,
    HARMBENCH_CATEGORIES, MLCOMMONS_HAZARDS, PKU_CATEGORIES,
};

/// A small valid taxonomy; leaves are given both as an inline array and as tables.
const TINY: &str = r#"name = "tiny"
version = "1"

[[macro]]
id = "crime"
name = "Crime"
description = "Crimes."

[[macro.micro]]
id = "cyber"
name = "Cybercrime"
description = "Computer crime."
pku = ["Cybercrime"]
harmbench = ["cybercrime_intrusion"]
mlcommons = ["S2", "S14"]
leaf = [
  { id = "account_takeover", name = "Account takeover", description = "Requests for help taking over accounts." },
  { id = "malware", name = "Malware", description = "Requests to write malicious software." },
]

[[macro]]
id = "hate"
name = "Hate"
description = "Hateful content."

[[macro.micro]]
id = "lgbtq+"
name = "Sexual orientation and gender identity"
description = "Hate against LGBTQ+ people."
mlcommons = ["S10"]

[[macro.micro.leaf]]
id = "stereotyping"
name = "Stereotyping"
description = "Content stereotyping LGBTQ+ people."
"#;

fn tiny() -> Taxonomy {
    Taxonomy::parse(TINY, "tiny.toml").expect("fixture is valid")
}

/// The problems of a taxonomy that must fail validation.
fn problems(source: &str) -> Vec<Problem> {
    match Taxonomy::parse(source, "bad.toml") {
        Err(TaxonomyError::Invalid { file, problems }) => {
            assert_eq!(file, "bad.toml");
            problems
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// (line, message) of a taxonomy that must fail to parse.
fn parse_error(source: &str) -> (usize, String) {
    match Taxonomy::parse(source, "bad.toml") {
        Err(TaxonomyError::Parse { file, line, message }) => {
            assert_eq!(file, "bad.toml");
            (line, message)
        }
        other => panic!("expected Parse, got {other:?}"),
    }
}

fn problem(line: usize, id: &str, message: &str) -> Problem {
    Problem { line, id: id.to_string(), message: message.to_string() }
}

// --- the built-in taxonomy ------------------------------------------------------------

#[test]
fn builtin_has_alerts_macro_and_micro_keys() {
    let tax = Taxonomy::builtin();
    let keys: Vec<(&str, Vec<&str>)> = tax
        .macros
        .iter()
        .map(|m| (m.id.as_str(), m.micros.iter().map(|u| u.id.as_str()).collect()))
        .collect();
    let expected: Vec<(&str, Vec<&str>)> = vec![
        ("crime", vec!["cyber", "injury", "kidnapping", "privacy", "propaganda", "tax", "theft", "other"]),
        ("hate", vec!["body", "disabled", "ethnic", "lgbtq+", "poor", "religion", "women", "other"]),
        ("self_harm", vec!["suicide", "thin", "other"]),
        ("sex", vec!["harassment", "porn", "other"]),
        ("substance", vec!["alcohol", "cannabis", "drug", "tobacco", "other"]),
        ("weapon", vec!["biological", "chemical", "firearm", "radioactive", "other"]),
    ];
    assert_eq!(keys, expected);
    let stats = tax.stats();
    assert_eq!((stats.macros, stats.micros), (6, 32));
    let labels: Vec<&str> = stats.per_micro.iter().map(|u| u.alert_label.as_str()).collect();
    for label in ["crime_cyber", "hate_lgbtq+", "self_harm_suicide", "weapon_radioactive"] {
        assert!(labels.contains(&label), "missing ALERT label {label}");
    }
}

#[test]
fn builtin_has_enough_leaves_everywhere() {
    let stats = Taxonomy::builtin().stats();
    assert!(stats.leaves >= 250, "{} leaves", stats.leaves);
    assert!(stats.min_leaves_per_micro >= 6, "a micro category has only {}", stats.min_leaves_per_micro);
    assert_eq!(stats.per_micro.iter().map(|u| u.leaves).sum::<usize>(), stats.leaves);
}

#[test]
fn builtin_maps_every_micro_to_every_target_with_valid_values() {
    let tax = Taxonomy::builtin();
    for target in MappingTarget::ALL {
        for (path, _, values) in tax.mapping(target) {
            assert!(!values.is_empty(), "{path} has no {target} mapping");
            for value in &values {
                assert!(target.is_valid(value), "{path}: `{value}` is not a {target} category");
            }
        }
    }
    for coverage in tax.stats().coverage {
        assert_eq!(coverage.mapped_micros, 32, "{}", coverage.target);
    }
}

#[test]
fn builtin_ids_are_unique_and_well_formed() {
    let tax = Taxonomy::builtin();
    let well_formed = |id: &str| {
        !id.is_empty() && id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_+".contains(c))
    };
    let mut macro_ids = HashSet::new();
    for m in &tax.macros {
        assert!(well_formed(&m.id) && macro_ids.insert(&m.id), "macro {}", m.id);
        let mut micro_ids = HashSet::new();
        for u in &m.micros {
            assert!(well_formed(&u.id) && micro_ids.insert(&u.id), "micro {}/{}", m.id, u.id);
            let mut leaf_ids = HashSet::new();
            for l in &u.leaves {
                assert!(well_formed(&l.id) && leaf_ids.insert(&l.id), "leaf {}/{}/{}", m.id, u.id, l.id);
                assert!(!l.name.is_empty() && !l.description.is_empty(), "{}/{}/{}", m.id, u.id, l.id);
            }
        }
    }
    let paths: HashSet<String> = tax.leaves().map(|l| l.path()).collect();
    assert_eq!(paths.len(), tax.leaf_count());
}

#[test]
fn target_lists_match_the_design() {
    assert_eq!(PKU_CATEGORIES.len(), 19);
    assert_eq!(HARMBENCH_CATEGORIES.len(), 7);
    assert_eq!(MLCOMMONS_HAZARDS[13], ("S14", "code interpreter abuse"));
    assert_eq!(PKU_CATEGORIES.iter().collect::<HashSet<_>>().len(), 19);
}

// --- validation -----------------------------------------------------------------------

#[test]
fn duplicate_ids_name_both_lines() {
    let source = TINY
        .replace(r#"{ id = "malware""#, r#"{ id = "account_takeover""#)
        .replace("[[macro]]\nid = \"hate\"", "[[macro]]\nid = \"crime\"");
    assert_eq!(
        problems(&source),
        vec![
            problem(
                18,
                "crime/cyber/account_takeover",
                "duplicate leaf id `account_takeover` in `crime/cyber` (first defined on line 17)"
            ),
            problem(22, "crime", "duplicate macro id `crime` in the taxonomy (first defined on line 5)"),
        ]
    );
}

#[test]
fn empty_nodes_are_reported_at_their_table() {
    let source = "name = \"t\"\n\n[[macro]]\nid = \"a\"\nname = \"A\"\ndescription = \"A.\"\n\n\
                  [[macro]]\nid = \"b\"\nname = \"B\"\ndescription = \"B.\"\n\n\
                  [[macro.micro]]\nid = \"c\"\nname = \"C\"\ndescription = \"C.\"\n";
    assert_eq!(
        problems(source),
        vec![
            problem(3, "a", "macro category has no micro categories"),
            problem(13, "b/c", "micro category has no leaf categories"),
        ]
    );
}

#[test]
fn dangling_mappings_name_the_bad_value() {
    let source = TINY
        .replace(r#"pku = ["Cybercrime"]"#, r#"pku = ["Cyber crime"]"#)
        .replace(r#"mlcommons = ["S10"]"#, r#"mlcommons = ["S10", "S15", "S10"]"#);
    assert_eq!(
        problems(&source),
        vec![
            problem(13, "crime/cyber", "unknown pku category `Cyber crime` (did you mean `Cybercrime`?)"),
            problem(30, "hate/lgbtq+", "unknown mlcommons category `S15` (did you mean `S1`?)"),
            problem(30, "hate/lgbtq+", "`S10` is listed twice in `mlcommons`"),
        ]
    );
}

#[test]
fn unknown_keys_are_rejected_with_name_and_line() {
    let source = TINY.replace("name = \"Stereotyping\"\n", "name = \"Stereotyping\"\ncolour = \"red\"\n");
    let (line, message) = parse_error(&source);
    assert_eq!(line, 35);
    assert!(message.contains("unknown field `colour`"), "{message}");

    let source = TINY.replace("version = \"1\"\n", "version = \"1\"\nauthor = \"me\"\n");
    let (line, message) = parse_error(&source);
    assert_eq!(line, 3);
    assert!(message.contains("unknown field `author`"), "{message}");
}

#[test]
fn syntax_errors_give_file_and_line() {
    let source = TINY.replace("description = \"Hateful content.\"", "description = \"Hateful content.");
    let (line, _) = parse_error(&source);
    assert_eq!(line, 24);
    let err = Taxonomy::parse(&source, "bad.toml").unwrap_err();
    assert!(err.to_string().starts_with("bad.toml:24: "), "{err}");
}

#[test]
fn all_problems_are_collected_and_displayed_one_per_line() {
    let source = "name = \"\"\n\n[[macro]]\nid = \"Bad-Id\"\nname = \"X\"\n\n\
                  [[macro.micro]]\nname = \"Y\"\ndescription = \"Y.\"\n\n\
                  [[macro.micro.leaf]]\nid = \"\"\nname = \"Z\"\ndescription = \"\"\n";
    let err = Taxonomy::parse(source, "bad.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid taxonomy bad.toml (6 problems):\n\
         bad.toml:1: taxonomy: `name` is empty\n\
         bad.toml:3: Bad-Id: missing `description`\n\
         bad.toml:4: Bad-Id: invalid character 'B' in id `Bad-Id` (use lowercase letters, digits, `_` and `+`)\n\
         bad.toml:7: Bad-Id/micro #1: micro category has no `id`\n\
         bad.toml:12: Bad-Id/micro #1/leaf #1: `id` is empty\n\
         bad.toml:14: Bad-Id/micro #1/leaf #1: `description` is empty"
    );
}

#[test]
fn colliding_alert_labels_are_rejected() {
    let source = "name = \"t\"\n\
        [[macro]]\nid = \"self\"\nname = \"S\"\ndescription = \"S.\"\n\
        [[macro.micro]]\nid = \"harm_x\"\nname = \"H\"\ndescription = \"H.\"\nleaf = [{ id = \"a\", name = \"A\", description = \"A.\" }]\n\
        [[macro]]\nid = \"self_harm\"\nname = \"SH\"\ndescription = \"SH.\"\n\
        [[macro.micro]]\nid = \"x\"\nname = \"X\"\ndescription = \"X.\"\nleaf = [{ id = \"a\", name = \"A\", description = \"A.\" }]\n";
    assert_eq!(
        problems(source),
        vec![problem(
            15,
            "self_harm/x",
            "ALERT label `self_harm_x` is also the label of `self/harm_x` (line 6)"
        )]
    );
}

#[test]
fn from_path_reads_files_and_reports_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(&path, TINY).unwrap();
    let tax = Taxonomy::from_path(&path).unwrap();
    assert_eq!(tax.origin, "mine.toml");
    assert_eq!(tax.leaf_count(), 3);

    std::fs::write(
        &path,
        TINY.replace(r#"harmbench = ["cybercrime_intrusion"]"#, r#"harmbench = ["cyber"]"#),
    )
    .unwrap();
    let err = Taxonomy::from_path(&path).unwrap_err();
    assert!(
        err.to_string().contains("mine.toml:14: crime/cyber: unknown harmbench category `cyber`"),
        "{err}"
    );

    let missing = dir.path().join("absent.toml");
    match Taxonomy::from_path(&missing) {
        Err(TaxonomyError::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("expected Io, got {other:?}"),
    }
}

// --- selection ------------------------------------------------------------------------

fn selected(tax: &Taxonomy, prefix: &str) -> Vec<String> {
    tax.select(prefix).unwrap().iter().map(|l| l.path()).collect()
}

#[test]
fn select_accepts_every_prefix_form() {
    let tax = tiny();
    let cyber = vec!["crime/cyber/account_takeover".to_string(), "crime/cyber/malware".to_string()];
    assert_eq!(selected(&tax, "").len(), 3);
    assert_eq!(selected(&tax, "crime"), cyber);
    assert_eq!(selected(&tax, "crime/cyber"), cyber);
    assert_eq!(selected(&tax, "crime_cyber"), cyber);
    assert_eq!(selected(&tax, " Crime/Cyber/ "), cyber);
    assert_eq!(selected(&tax, "crime/cyber/malware"), vec!["crime/cyber/malware"]);
    assert_eq!(selected(&tax, "hate_lgbtq+"), vec!["hate/lgbtq+/stereotyping"]);

    let builtin = Taxonomy::builtin();
    let suicide = selected(&builtin, "self_harm_suicide");
    assert!(suicide.len() >= 6 && suicide.iter().all(|p| p.starts_with("self_harm/suicide/")));
    let self_harm = selected(&builtin, "self_harm");
    assert!(self_harm.len() > suicide.len() && self_harm.iter().all(|p| p.starts_with("self_harm/")));
}

#[test]
fn unknown_prefixes_suggest_close_matches() {
    let tax = tiny();
    let suggestions = |prefix: &str| match tax.select(prefix) {
        Err(TaxonomyError::UnknownCategory { prefix: p, suggestions }) => {
            assert_eq!(p, prefix);
            suggestions
        }
        other => panic!("expected UnknownCategory for {prefix}, got {other:?}"),
    };
    assert_eq!(suggestions("crim")[0], "crime");
    assert_eq!(suggestions("crime/cyber/malwar")[0], "crime/cyber/malware");
    assert_eq!(suggestions("account_takeover")[0], "crime/cyber/account_takeover");
    assert!(suggestions("crime/cyber/malware/extra").contains(&"crime/cyber/malware".to_string()));
    assert!(suggestions("zzzzzzzzzzzz").is_empty());
    let builtin = Taxonomy::builtin();
    match builtin.select("crime/cyber/phishing") {
        Err(TaxonomyError::UnknownCategory { suggestions, .. }) => {
            assert_eq!(suggestions, vec!["crime/cyber/phishing_social_engineering"]);
        }
        other => panic!("expected UnknownCategory, got {other:?}"),
    }
    let err = tax.select("hate_lgbt").unwrap_err();
    assert_eq!(err.to_string(), "no taxonomy category matches `hate_lgbt`; did you mean hate_lgbtq+?");
}

#[test]
fn leaf_refs_serialise_as_flat_records() {
    let tax = tiny();
    let leaf = tax.select("crime/cyber/malware").unwrap()[0];
    let json = serde_json::to_value(leaf).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "path": "crime/cyber/malware", "alert_label": "crime_cyber", "macro": "crime",
            "micro": "cyber", "leaf": "malware", "name": "Malware",
            "description": "Requests to write malicious software."
        })
    );
    let whole = serde_json::to_value(&tax).unwrap();
    assert_eq!(whole["macros"][1]["micros"][0]["mappings"]["mlcommons"], serde_json::json!(["S10"]));
}

// --- renderers ------------------------------------------------------------------------

#[test]
fn tree_renders_the_whole_fixture() {
    assert_eq!(
        render_tree(&tiny(), "", false).unwrap(),
        "tiny v1: 2 macro, 2 micro and 3 leaf categories
crime: Crime (1 micro category, 2 leaves)
  cyber: Cybercrime [crime_cyber] (2 leaves)
    account_takeover: Account takeover
    malware: Malware
hate: Hate (1 micro category, 1 leaf)
  lgbtq+: Sexual orientation and gender identity [hate_lgbtq+] (1 leaf)
    stereotyping: Stereotyping
"
    );
}

#[test]
fn tree_renders_a_selection_with_descriptions() {
    assert_eq!(
        render_tree(&tiny(), "crime_cyber", true).unwrap(),
        "tiny v1: 1 macro, 1 micro and 2 leaf categories under `crime_cyber`
crime: Crime (1 micro category, 2 leaves)
    Crimes.
  cyber: Cybercrime [crime_cyber] (2 leaves)
      Computer crime.
    account_takeover: Account takeover
        Requests for help taking over accounts.
    malware: Malware
        Requests to write malicious software.
"
    );
    assert!(matches!(render_tree(&tiny(), "nope", false), Err(TaxonomyError::UnknownCategory { .. })));
}

#[test]
fn stats_render_counts_and_coverage() {
    assert_eq!(
        render_stats(&tiny()),
        "tiny v1 (tiny.toml)
macro categories: 2
micro categories: 2
leaf categories: 3
leaves per micro category: min 1, max 2

per macro category:
  macro  micros  leaves
  crime       1       2
  hate        1       1

per micro category:
  micro        alert label  leaves
  crime/cyber  crime_cyber       2
  hate/lgbtq+  hate_lgbtq+       1

mapping coverage:
  pku        1/2 micro categories mapped, 1/19 PKU-SafeRLHF categories used
  harmbench  1/2 micro categories mapped, 1/7 HarmBench categories used
  mlcommons  2/2 micro categories mapped, 3/14 MLCommons categories used
"
    );
}

#[test]
fn mapping_renders_rows_and_unused_target_categories() {
    assert_eq!(
        render_mapping(&tiny(), MappingTarget::Harmbench),
        "tiny v1 -> HarmBench (harmbench)
  crime/cyber  crime_cyber  cybercrime_intrusion
  hate/lgbtq+  hate_lgbtq+  -
mapped: 1/2 micro categories
HarmBench categories no micro category maps to (6):
  chemical_biological
  harassment_bullying
  illegal
  misinformation_disinformation
  harmful
  copyright
"
    );
    let mlcommons = render_mapping(&tiny(), MappingTarget::Mlcommons);
    assert!(mlcommons.contains("\n  crime/cyber  crime_cyber  S2, S14\n"), "{mlcommons}");
    assert!(
        mlcommons.contains("\nMLCommons categories no micro category maps to (11):\n  S1 violent crimes\n")
    );
    assert!(!mlcommons.contains("S10 hate"));
    let builtin = render_mapping(&Taxonomy::builtin(), MappingTarget::Pku);
    assert!(builtin.ends_with("mapped: 32/32 micro categories\nevery PKU-SafeRLHF category is mapped to\n"));
}
