//! Planner output: `<think>…</think>` then `<plan>` with numbered sub-tasks, one per line
//! (`1. …`, `2) …`), `</plan>`.
use serde::{Deserialize, Serialize};

use super::tags::{find_blocks, text_outside};
use super::{clip, snippet, ParseIssue, MAX_OUTPUT_BYTES, MAX_SUBTASKS};

/// Parsed planner output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PlannerOutput {
    pub think: Option<String>,
    /// Sub-task instructions, numbering stripped, in order.
    pub subtasks: Vec<String>,
    pub issues: Vec<ParseIssue>,
}

impl PlannerOutput {
    pub fn is_well_formed(&self) -> bool {
        self.issues.is_empty()
    }
}

/// Split `1. text` / `1) text` / `1: text` into (number, text).
fn split_number(line: &str) -> Option<(&str, &str)> {
    let digits = line.bytes().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 3 {
        return None;
    }
    let rest = &line[digits..];
    let rest = rest
        .strip_prefix('.')
        .or_else(|| rest.strip_prefix(')'))
        .or_else(|| rest.strip_prefix(':'))?;
    Some((&line[..digits], rest.trim()))
}

/// Parse a planner output. Never panics.
pub fn parse_planner(text: &str) -> PlannerOutput {
    let mut out = PlannerOutput::default();
    let text = if text.len() > MAX_OUTPUT_BYTES {
        out.issues.push(ParseIssue::TooLong {
            limit: MAX_OUTPUT_BYTES,
        });
        clip(text, MAX_OUTPUT_BYTES)
    } else {
        text
    };
    if text.trim().is_empty() {
        out.issues.push(ParseIssue::Empty);
        return out;
    }
    let mut issues = Vec::new();
    let thinks = find_blocks(text, "think", &mut issues);
    match thinks.len() {
        0 => issues.push(ParseIssue::MissingTag {
            tag: "think".into(),
        }),
        1 => {}
        _ => issues.push(ParseIssue::DuplicateTag {
            tag: "think".into(),
        }),
    }
    if let Some(b) = thinks.first() {
        out.think = Some(b.inner.trim().to_string());
        if !text[..b.start].trim().is_empty() {
            issues.push(ParseIssue::TagOrder {
                tag: "think".into(),
                detail: "must come first".into(),
            });
        }
    }
    let think_range = thinks.first().map(|b| (b.start, b.end));
    let plans: Vec<_> = find_blocks(text, "plan", &mut issues)
        .into_iter()
        .filter(|b| !think_range.is_some_and(|(s, e)| b.start > s && b.start < e))
        .collect();
    match plans.len() {
        0 => issues.push(ParseIssue::MissingTag { tag: "plan".into() }),
        1 => {}
        _ => issues.push(ParseIssue::DuplicateTag { tag: "plan".into() }),
    }
    let mut ranges: Vec<(usize, usize)> = thinks.iter().map(|b| (b.start, b.end)).collect();
    ranges.extend(plans.iter().map(|b| (b.start, b.end)));
    if let Some(snippet) = text_outside(text, &ranges) {
        issues.push(ParseIssue::TextOutsideTags { snippet });
    }
    if let Some(p) = plans.first() {
        let mut expected = 1usize;
        for (li, line) in p.inner.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() {
                continue;
            }
            if out.subtasks.len() >= MAX_SUBTASKS {
                issues.push(ParseIssue::TooManySubtasks {
                    limit: MAX_SUBTASKS,
                });
                break;
            }
            match split_number(l) {
                Some((num, body)) => {
                    if num.parse::<usize>().ok() != Some(expected) {
                        issues.push(ParseIssue::BadNumbering {
                            line: li + 1,
                            expected,
                            found: num.to_string(),
                        });
                    }
                    if body.is_empty() {
                        issues.push(ParseIssue::UnnumberedLine {
                            line: li + 1,
                            snippet: snippet(l),
                        });
                    } else {
                        out.subtasks.push(body.to_string());
                    }
                    expected += 1;
                }
                None => issues.push(ParseIssue::UnnumberedLine {
                    line: li + 1,
                    snippet: snippet(l),
                }),
            }
        }
        if out.subtasks.is_empty() {
            issues.push(ParseIssue::NoSubtasks);
        }
    }
    out.issues.extend(issues);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_plan() {
        let p = parse_planner("<think>a</think>\n<plan>\n1. log in as alice with password red\n2) get the balance of checking\n</plan>");
        assert!(p.issues.is_empty(), "{:?}", p.issues);
        assert_eq!(
            p.subtasks,
            vec![
                "log in as alice with password red",
                "get the balance of checking"
            ]
        );
    }

    #[test]
    fn reports_numbering_and_unnumbered_lines() {
        let p = parse_planner("<think>a</think><plan>\n1. x\n3. y\n- z\n</plan>");
        assert_eq!(p.subtasks, vec!["x", "y"]);
        assert!(p.issues.contains(&ParseIssue::BadNumbering {
            line: 3,
            expected: 2,
            found: "3".into()
        }));
        assert!(p
            .issues
            .iter()
            .any(|i| matches!(i, ParseIssue::UnnumberedLine { line: 4, .. })));
    }

    #[test]
    fn reports_missing_plan_and_empty_plan() {
        let p = parse_planner("<think>a</think>");
        assert!(p
            .issues
            .contains(&ParseIssue::MissingTag { tag: "plan".into() }));
        let p = parse_planner("<think>a</think><plan>\n</plan>");
        assert!(p.issues.contains(&ParseIssue::NoSubtasks));
        let p = parse_planner("<plan>1. a");
        assert!(p
            .issues
            .contains(&ParseIssue::UnclosedTag { tag: "plan".into() }));
        assert!(p.issues.contains(&ParseIssue::MissingTag {
            tag: "think".into()
        }));
        assert_eq!(p.subtasks, vec!["a"]);
    }
}
