//! Fuzzing the parsers with mutated model outputs: realistic planner and executor outputs are
//! truncated, given duplicate and nested tags, random bytes and unicode, and long runs of
//! repeated tags; the executor and planner parsers and `validate_call` must never panic and must
//! keep their basic invariants. Fixed seed and case budget, so it runs in a few seconds in
//! `cargo test` and fails the same way every time.
use cahl_engine::parse::{
    parse_executor, parse_planner, validate_call, IssueClass, ParseIssue, ToolSchema, MAX_CALLS,
    MAX_OUTPUT_BYTES, MAX_SUBTASKS,
};
use cahl_engine::worlds::builtin::builtin_tools;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

const TAGS: [&str; 8] = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<response>",
    "</response>",
    "<plan>",
    "</plan>",
];

/// Realistic outputs (as in the parser tests and the prompts): planner plans, ToolRL lines,
/// Hermes blocks, OpenAI-style calls, a response only.
fn seeds() -> Vec<String> {
    let tools = builtin_tools();
    // Well-formed calls of real tools, with a string for every parameter.
    let call = |t: &ToolSchema, key: &str| {
        let args: serde_json::Map<String, serde_json::Value> = t
            .property_names()
            .into_iter()
            .map(|p| (p.to_string(), serde_json::json!("x")))
            .collect();
        serde_json::json!({"name": t.name, key: args}).to_string()
    };
    vec![
        "<think>two steps</think>\n<plan>\n1. log in as alice with password red\n2) get the \
         balance of checking\n</plan>"
            .to_string(),
        "<think>a</think><plan>\n1. x\n3. y\n- z\n</plan>".to_string(),
        format!(
            "<think>\nok\n</think>\n\n<tool_call>\n{}\n{}\n</tool_call>\n<response>\ndone\n</response>",
            call(&tools[0], "parameters"),
            call(&tools[1 % tools.len()], "parameters")
        ),
        format!(
            "<think>x</think>\n<tool_call>\n{}\n</tool_call>\n<tool_call>\n{{\"name\": \"b\", \
             \"arguments\": \"{{\\\"k\\\": 2}}\"}}\n</tool_call>",
            call(&tools[2 % tools.len()], "arguments")
        ),
        format!(
            "<think>t</think><tool_call>\n[{}, {{\"type\": \"function\", \"function\": {{\"name\": \
             \"{}\", \"arguments\": {{}}}}}}]\n</tool_call>",
            call(&tools[3 % tools.len()], "parameters"),
            tools[4 % tools.len()].name
        ),
        "<think>nothing to call</think>\n<response>The balance is 10.</response>".to_string(),
    ]
}

/// One edit of the text; positions are fractions of the current length (snapped to a char
/// boundary).
#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    InsertTag(f64, usize),
    RepeatTag(f64, usize, usize),
    Insert(f64, String),
    InsertBytes(f64, Vec<u8>),
    Nest(f64, f64, usize),
    Delete(f64, f64),
    Duplicate(f64, f64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let at = 0.0..=1.0f64;
    let tag = 0..TAGS.len();
    prop_oneof![
        2 => at.clone().prop_map(Mutation::Truncate),
        3 => (at.clone(), tag.clone()).prop_map(|(a, t)| Mutation::InsertTag(a, t)),
        1 => (at.clone(), tag.clone(), 1..6000usize).prop_map(|(a, t, n)| Mutation::RepeatTag(a, t, n)),
        3 => (at.clone(), "\\PC{0,8}|[\\x00-\\x1f{}\\[\\]\":,<>/]{0,8}").prop_map(|(a, s)| Mutation::Insert(a, s)),
        2 => (at.clone(), prop::collection::vec(any::<u8>(), 0..12)).prop_map(|(a, b)| Mutation::InsertBytes(a, b)),
        2 => (at.clone(), at.clone(), 0..4usize).prop_map(|(a, b, t)| Mutation::Nest(a, b, t)),
        2 => (at.clone(), at.clone()).prop_map(|(a, b)| Mutation::Delete(a, b)),
        2 => (at.clone(), at).prop_map(|(a, b)| Mutation::Duplicate(a, b)),
    ]
}

/// Byte offset at fraction `f` of `s`, moved down to a char boundary.
fn at(s: &str, f: f64) -> usize {
    let mut i = ((s.len() as f64) * f) as usize;
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn span(s: &str, a: f64, b: f64) -> (usize, usize) {
    let (a, b) = (at(s, a), at(s, b));
    (a.min(b), a.max(b))
}

fn apply(mut s: String, m: &Mutation) -> String {
    match m {
        Mutation::Truncate(f) => s.truncate(at(&s, *f)),
        Mutation::InsertTag(f, t) => s.insert_str(at(&s, *f), TAGS[*t]),
        Mutation::RepeatTag(f, t, n) => s.insert_str(at(&s, *f), &TAGS[*t].repeat(*n)),
        Mutation::Insert(f, x) => s.insert_str(at(&s, *f), x),
        Mutation::InsertBytes(f, b) => s.insert_str(at(&s, *f), &String::from_utf8_lossy(b)),
        Mutation::Nest(a, b, t) => {
            let (a, b) = span(&s, *a, *b);
            s.insert_str(b, TAGS[2 * t + 1]);
            s.insert_str(a, TAGS[2 * t]);
        }
        Mutation::Delete(a, b) => {
            let (a, b) = span(&s, *a, *b);
            s.replace_range(a..b, "");
        }
        Mutation::Duplicate(a, b) => {
            let (a, b) = span(&s, *a, *b);
            let piece = s[a..b].to_string();
            s.insert_str(b, &piece);
        }
    }
    s
}

fn mutated_output() -> impl Strategy<Value = String> {
    (
        prop::sample::select(seeds()),
        prop::collection::vec(mutation(), 0..6),
    )
        .prop_map(|(seed, ms)| ms.iter().fold(seed, apply))
}

/// The text the parsers look at (cut at `MAX_OUTPUT_BYTES`).
fn clipped(s: &str) -> &str {
    cahl_engine::parse::clip(s, MAX_OUTPUT_BYTES)
}

fn check_executor(s: &str, tools: &[ToolSchema]) -> Result<(), TestCaseError> {
    let out = parse_executor(s);
    prop_assert_eq!(&out, &parse_executor(s), "deterministic");
    let text = clipped(s);
    let too_long = out.issues.contains(&ParseIssue::TooLong {
        limit: MAX_OUTPUT_BYTES,
    });
    prop_assert_eq!(too_long, s.len() > MAX_OUTPUT_BYTES);
    if text.trim().is_empty() {
        prop_assert_eq!(out.issues.last(), Some(&ParseIssue::Empty));
        prop_assert!(out.entries.is_empty() && out.think.is_none());
        return Ok(());
    }
    prop_assert!(!out.issues.contains(&ParseIssue::Empty));
    for part in out.think.iter().chain(&out.response) {
        prop_assert!(
            text.contains(part.as_str()),
            "{part:?} is not from the text"
        );
    }
    prop_assert!(out.entries.len() <= MAX_CALLS);
    prop_assert!(out.has_tool_call_block || out.entries.is_empty());
    let mut prev_block = 0;
    for e in &out.entries {
        prop_assert!(e.block >= prev_block, "entries in block order");
        prev_block = e.block;
        prop_assert!(e.line >= 1);
        prop_assert_eq!(e.call.is_some(), e.issues.is_empty());
        prop_assert!(e.issues.iter().all(|i| i.class() == IssueClass::Syntax));
        prop_assert!(e.issues.iter().all(|i| out.issues.contains(i)));
    }
    prop_assert!(out.issues.iter().all(|i| i.class() != IssueClass::Schema));
    prop_assert!(out.issues.iter().all(|i| !i.message().is_empty()));
    prop_assert!(serde_json::to_string(&out).is_ok());
    for call in out.calls() {
        prop_assert!(!call.name.is_empty() && call.name == call.name.trim());
        let issues = validate_call(&call, tools);
        prop_assert!(issues.iter().all(|i| i.class() == IssueClass::Schema));
        let known = tools.iter().any(|t| t.name == call.name);
        if !known {
            prop_assert_eq!(issues.len(), 1);
        }
        let unknown_reported = issues
            .iter()
            .any(|i| matches!(i, ParseIssue::UnknownTool { .. }));
        prop_assert_eq!(unknown_reported, !known);
    }
    Ok(())
}

fn check_planner(s: &str) -> Result<(), TestCaseError> {
    let out = parse_planner(s);
    prop_assert_eq!(&out, &parse_planner(s), "deterministic");
    let text = clipped(s);
    prop_assert_eq!(
        out.issues.contains(&ParseIssue::TooLong {
            limit: MAX_OUTPUT_BYTES
        }),
        s.len() > MAX_OUTPUT_BYTES
    );
    if text.trim().is_empty() {
        prop_assert_eq!(out.issues.last(), Some(&ParseIssue::Empty));
        prop_assert!(out.subtasks.is_empty());
        return Ok(());
    }
    prop_assert!(out.subtasks.len() <= MAX_SUBTASKS);
    for t in &out.subtasks {
        prop_assert!(!t.is_empty() && t.trim() == t && !t.contains('\n'), "{t:?}");
        prop_assert!(text.contains(t.as_str()));
    }
    if let Some(t) = &out.think {
        prop_assert!(text.contains(t.as_str()));
    }
    prop_assert_eq!(out.is_well_formed(), out.issues.is_empty());
    prop_assert!(out.issues.iter().all(|i| i.class() == IssueClass::Format));
    Ok(())
}

proptest! {
    #![proptest_config(Config {
        cases: 8000,
        rng_seed: RngSeed::Fixed(0x23_f022),
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn parsers_survive_mutated_outputs(s in mutated_output()) {
        let tools = builtin_tools();
        check_executor(&s, tools)?;
        check_planner(&s)?;
    }
}

#[test]
fn the_seeds_parse_cleanly() {
    let tools = builtin_tools();
    for s in seeds() {
        check_executor(&s, tools).unwrap();
        check_planner(&s).unwrap();
    }
}

/// `<think>` x 4,681 (32 KB), the input that took 50 ms with the quadratic tag scan, and
/// repeated unclosed tags past the length limit: parsed, every tag reported unclosed.
#[test]
fn repeated_unclosed_tags_parse() {
    let t = "<think>".repeat(4681);
    assert!(t.len() <= MAX_OUTPUT_BYTES);
    let out = parse_executor(&t);
    let unclosed = out
        .issues
        .iter()
        .filter(|i| matches!(i, ParseIssue::UnclosedTag { .. }))
        .count();
    assert_eq!(unclosed, 4681);
    let long = "<plan>".repeat(4 * 4681);
    let p = parse_planner(&long);
    assert_eq!(
        p.issues[0],
        ParseIssue::TooLong {
            limit: MAX_OUTPUT_BYTES
        }
    );
    check_executor(&long, builtin_tools()).unwrap();
    check_planner(&long).unwrap();
}
