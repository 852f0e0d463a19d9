//! Gold answers turned into predictions must score 100% on every BFCL and API-Bank file (and on
//! NESTFUL and Bamboogle). Needs `<repo>/../shared/data`; skips with a printed reason otherwise.
use std::path::PathBuf;

use cahl_engine::benchmarks::Bench;

fn data_dir(sub: &str) -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data")
        .join(sub);
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!(
            "SKIPPED: {} not found (shared benchmark data absent)",
            d.display()
        );
        None
    }
}

fn check_gold(bench: Bench, sub: &str) {
    let Some(dir) = data_dir(sub) else { return };
    let preds = bench.gold_predictions(&dir, None).unwrap();
    let report = bench.score(&dir, None, &preds).unwrap();
    print!("{sub}:\n{}", report.summary());
    for (cat, c) in &report.per_category {
        let bad: Vec<_> = report
            .verdicts
            .iter()
            .filter(|v| !v.correct && v.category.as_deref() == Some(cat.as_str()))
            .take(3)
            .map(|v| format!("{}: {:?}", v.id, v.error))
            .collect();
        assert_eq!(c.correct, c.total, "{sub}/{cat} gold not 100%: {bad:?}");
        assert!(c.total > 0);
    }
    assert_eq!(report.unmatched_predictions, 0);
}

#[test]
fn bfcl_gold_scores_100() {
    check_gold(Bench::Bfcl, "bfcl");
}

#[test]
fn apibank_gold_scores_100() {
    check_gold(Bench::ApiBank, "api-bank");
}

#[test]
fn nestful_gold_scores_100() {
    check_gold(Bench::Nestful, "nestful");
}

#[test]
fn bamboogle_gold_scores_100() {
    check_gold(Bench::Bamboogle, "bamboogle");
}

#[test]
fn bfcl_empty_predictions_score_only_irrelevance() {
    let Some(dir) = data_dir("bfcl") else { return };
    let report = Bench::Bfcl.score(&dir, Some("simple_python"), &[]).unwrap();
    assert_eq!(report.overall.correct, 0);
    let preds: Vec<_> = Bench::Bfcl
        .gold_predictions(&dir, Some("irrelevance"))
        .unwrap()
        .into_iter()
        .map(|p| cahl_engine::benchmarks::Prediction::from_calls(p.id, vec![]))
        .collect();
    let report = Bench::Bfcl
        .score(&dir, Some("irrelevance"), &preds)
        .unwrap();
    assert_eq!(report.overall.correct, report.overall.total);
}

#[test]
fn apibank_item_ids_follow_file_stem_and_index() {
    let Some(dir) = data_dir("api-bank") else {
        return;
    };
    let items = cahl_engine::benchmarks::apibank::load(&dir, Some("level-1")).unwrap();
    assert_eq!(items[0].id, "level-1-0");
    assert_eq!(items.len(), 399);
}

#[test]
fn benchmark_items_load_as_tasks_with_schema_valid_gold() {
    use cahl_engine::benchmarks::{apibank, bfcl, nestful};
    use cahl_engine::parse::validate_call;
    if let Some(dir) = data_dir("api-bank") {
        let tasks = apibank::load_tasks(&dir, None).unwrap();
        assert_eq!(tasks.len(), 466);
        let ok = tasks
            .iter()
            .filter(|t| {
                t.gold_calls.iter().all(|c| {
                    validate_call(c, &t.tools)
                        .iter()
                        .all(|i| !matches!(i, cahl_engine::parse::ParseIssue::UnknownTool { .. }))
                })
            })
            .count();
        println!(
            "api-bank: gold tool names found in the system prompt for {ok}/{}",
            tasks.len()
        );
        assert!(ok * 10 >= tasks.len() * 9);
    }
    if let Some(dir) = data_dir("bfcl") {
        let tasks = bfcl::load_tasks(&dir, Some("simple_python")).unwrap();
        assert_eq!(tasks.len(), 400);
        assert!(!tasks[0].request.is_empty());
        assert_eq!(tasks[0].tools[0].name, tasks[0].gold_calls[0].name);
    }
    if let Some(dir) = data_dir("nestful") {
        let tasks = nestful::load_tasks(&dir, None).unwrap();
        assert_eq!(tasks.len(), 215);
        assert!(tasks
            .iter()
            .any(|t| t.gold_derived.iter().any(|d| !d.is_empty())));
        assert!(tasks.iter().all(|t| !t.tools.is_empty()));
    }
}
