//! `sagert taxonomy`

use super::util::{code, run_in, text, Workspace};

#[test]
fn stats_show_and_map_the_builtin() {
    let ws = Workspace::new();
    let out = run_in(ws.path(), &["taxonomy", "stats", "--json"]);
    assert_eq!(code(&out), 0);
    let s: serde_json::Value = serde_json::from_str(&text(&out).0).unwrap();
    assert_eq!(s["macros"], 6);
    assert_eq!(s["micros"], 32);
    assert!(s["leaves"].as_u64().unwrap() >= 250);

    let out = run_in(ws.path(), &["taxonomy", "show", "weapon/firearm", "--json"]);
    assert_eq!(code(&out), 0);
    let leaves: Vec<serde_json::Value> = serde_json::from_str(&text(&out).0).unwrap();
    assert!(!leaves.is_empty());
    assert!(leaves.iter().all(|l| l["path"].as_str().unwrap().starts_with("weapon/firearm/")));
    assert!(leaves.iter().all(|l| l["alert"] == "weapon_firearm"));

    let out = run_in(ws.path(), &["taxonomy", "show", "weapon/nope"]);
    assert_eq!(code(&out), 2);

    for target in ["pku", "harmbench", "mlcommons"] {
        let out = run_in(ws.path(), &["taxonomy", "map", "--to", target, "--json"]);
        assert_eq!(code(&out), 0);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&text(&out).0).unwrap();
        assert_eq!(rows.len(), 32);
        assert!(
            rows.iter().all(|r| !r["targets"].as_array().unwrap().is_empty()),
            "{target}: every micro is mapped"
        );
    }
}

#[test]
fn validate_reports_every_problem_with_lines() {
    let ws = Workspace::new();
    ws.write(
        "tax.toml",
        r#"name = "mine"
version = "1"
description = "a test taxonomy"

[[macro]]
id = "alpha"
name = "Alpha"
description = "First."

[[macro.micro]]
id = "one"
name = "One"
description = "Placeholder."
pku = ["Not A Category"]
harmbench = ["illegal"]
mlcommons = ["S2"]

[[macro.micro.leaf]]
id = "x"
name = "X"
description = "Placeholder leaf."

[[macro.micro.leaf]]
id = "x"
name = "X again"
description = "Duplicate."
"#,
    );
    let out = run_in(ws.path(), &["taxonomy", "validate", "tax.toml"]);
    let (_, stderr) = text(&out);
    assert_eq!(code(&out), 2);
    assert!(stderr.contains("tax.toml:14"), "dangling mapping on line 14: {stderr}");
    assert!(stderr.contains("Not A Category"), "{stderr}");
    assert!(stderr.contains("tax.toml:24"), "duplicate id on line 24: {stderr}");
}
