//! Tag scanning shared by the executor and planner parsers.
use super::ParseIssue;

/// One `<tag>…</tag>` region of the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Block<'a> {
    /// Byte offset of `<tag>`.
    pub start: usize,
    /// Byte offset just past `</tag>` (or the end of the unclosed region).
    pub end: usize,
    pub inner: &'a str,
}

/// Every `<tag>` region of `text`, in order. Unclosed regions run to the next `<tag>` or the end
/// of the text and are reported; stray `</tag>` are reported too (once).
///
/// Linear in the length of `text` (see [`scan_blocks`]).
pub(crate) fn find_blocks<'a>(
    text: &'a str,
    tag: &str,
    issues: &mut Vec<ParseIssue>,
) -> Vec<Block<'a>> {
    scan_blocks(text, tag, issues).0
}

/// [`find_blocks`], also returning the work done (bytes searched plus tag positions visited) so
/// tests can check that it grows linearly with the input.
///
/// One pass per tag string finds every `<tag>` and every `</tag>` position; the pairing then
/// walks both position lists with cursors that only move forward. (The earlier version searched
/// the rest of the text for a `</tag>` after each `<tag>`, which is quadratic for repeated
/// unclosed tags.) Because a tag name holds no `<`, neither `<tag>` nor `</tag>` can overlap
/// another occurrence of either, so these lists hold every match in any slice of the text and
/// the result is the same as searching each slice.
pub(crate) fn scan_blocks<'a>(
    text: &'a str,
    tag: &str,
    issues: &mut Vec<ParseIssue>,
) -> (Vec<Block<'a>>, usize) {
    debug_assert!(!tag.contains('<'), "tag names hold no '<'");
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let opens: Vec<usize> = text.match_indices(open.as_str()).map(|(i, _)| i).collect();
    let closes: Vec<usize> = text.match_indices(close.as_str()).map(|(i, _)| i).collect();
    let mut work = 2 * text.len();
    let mut blocks = Vec::new();
    // `opens[oi]` / `closes[ci]`: the first occurrence at or after the cursor.
    let (mut oi, mut ci) = (0usize, 0usize);
    let mut pos = 0usize;
    let mut stray_reported = false;
    loop {
        work += 1;
        while oi < opens.len() && opens[oi] < pos {
            oi += 1;
            work += 1;
        }
        while ci < closes.len() && closes[ci] < pos {
            ci += 1;
            work += 1;
        }
        let next_open = opens.get(oi).copied();
        let search_end = next_open.unwrap_or(text.len());
        // A `</tag>` lying wholly in `pos..search_end` has no `<tag>` before it.
        if !stray_reported
            && closes
                .get(ci)
                .is_some_and(|&c| c + close.len() <= search_end)
        {
            issues.push(ParseIssue::UnopenedTag {
                tag: tag.to_string(),
            });
            stray_reported = true;
        }
        let Some(o) = next_open else { break };
        let inner_start = o + open.len();
        while ci < closes.len() && closes[ci] < inner_start {
            ci += 1;
            work += 1;
        }
        let c = closes.get(ci).copied();
        // Occurrences do not overlap, so the next `<tag>` starts at or after `inner_start`.
        let o2 = opens.get(oi + 1).copied();
        match (c, o2) {
            (Some(c), o2) if o2.is_none_or(|o2| c < o2) => {
                blocks.push(Block {
                    start: o,
                    end: c + close.len(),
                    inner: &text[inner_start..c],
                });
                pos = c + close.len();
            }
            (_, Some(o2)) => {
                issues.push(ParseIssue::UnclosedTag {
                    tag: tag.to_string(),
                });
                blocks.push(Block {
                    start: o,
                    end: o2,
                    inner: &text[inner_start..o2],
                });
                pos = o2;
            }
            (_, None) => {
                issues.push(ParseIssue::UnclosedTag {
                    tag: tag.to_string(),
                });
                blocks.push(Block {
                    start: o,
                    end: text.len(),
                    inner: &text[inner_start..],
                });
                break;
            }
        }
    }
    (blocks, work)
}

/// Non-whitespace text not covered by any of `ranges` (sorted or not), as a snippet.
pub(crate) fn text_outside(text: &str, ranges: &[(usize, usize)]) -> Option<String> {
    let mut r: Vec<(usize, usize)> = ranges.to_vec();
    r.sort_unstable();
    let mut pos = 0usize;
    let mut out = String::new();
    for (s, e) in r {
        if s > pos {
            out.push_str(&text[pos..s]);
        }
        pos = pos.max(e);
    }
    if pos < text.len() {
        out.push_str(&text[pos..]);
    }
    let t = out.trim();
    if t.is_empty() {
        None
    } else {
        Some(super::snippet(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    /// The quadratic implementation this module replaced, kept as the reference: the new scan
    /// must give the same blocks and issues on every input. Also returns the bytes it searched.
    fn find_blocks_reference<'a>(
        text: &'a str,
        tag: &str,
        issues: &mut Vec<ParseIssue>,
    ) -> (Vec<Block<'a>>, usize) {
        let open = format!("<{tag}>");
        let close = format!("</{tag}>");
        let mut work = 0usize;
        // Bytes a substring search from `from` looks at: up to the end of the match, or the end.
        let searched =
            |hay: &str, m: Option<usize>, pat: &str| m.map_or(hay.len(), |i| i + pat.len());
        let mut blocks = Vec::new();
        let mut pos = 0usize;
        let mut stray_reported = false;
        while pos <= text.len() {
            let rest = &text[pos..];
            let next_open = rest.find(&open).map(|i| i + pos);
            work += searched(rest, next_open.map(|o| o - pos), &open);
            let search_end = next_open.unwrap_or(text.len());
            if !stray_reported {
                work += search_end - pos;
                if text[pos..search_end].contains(&close) {
                    issues.push(ParseIssue::UnopenedTag {
                        tag: tag.to_string(),
                    });
                    stray_reported = true;
                }
            }
            let Some(o) = next_open else { break };
            let inner_start = o + open.len();
            let after = &text[inner_start..];
            let c = after.find(&close).map(|i| i + inner_start);
            work += searched(after, c.map(|c| c - inner_start), &close);
            let o2 = after.find(&open).map(|i| i + inner_start);
            work += searched(after, o2.map(|o| o - inner_start), &open);
            match (c, o2) {
                (Some(c), o2) if o2.is_none_or(|o2| c < o2) => {
                    blocks.push(Block {
                        start: o,
                        end: c + close.len(),
                        inner: &text[inner_start..c],
                    });
                    pos = c + close.len();
                }
                (_, Some(o2)) => {
                    issues.push(ParseIssue::UnclosedTag {
                        tag: tag.to_string(),
                    });
                    blocks.push(Block {
                        start: o,
                        end: o2,
                        inner: &text[inner_start..o2],
                    });
                    pos = o2;
                }
                (_, None) => {
                    issues.push(ParseIssue::UnclosedTag {
                        tag: tag.to_string(),
                    });
                    blocks.push(Block {
                        start: o,
                        end: text.len(),
                        inner: &text[inner_start..],
                    });
                    break;
                }
            }
        }
        (blocks, work)
    }

    const TAGS: [&str; 4] = ["think", "tool_call", "response", "plan"];

    fn assert_same(text: &str) {
        for tag in TAGS {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let new = find_blocks(text, tag, &mut a);
            let (old, _) = find_blocks_reference(text, tag, &mut b);
            assert_eq!(new, old, "blocks of <{tag}> in {text:?}");
            assert_eq!(a, b, "issues of <{tag}> in {text:?}");
            let mut prev_end = 0;
            for blk in &new {
                assert!(prev_end <= blk.start && blk.start < blk.end && blk.end <= text.len());
                assert!(text[blk.start..].starts_with(&format!("<{tag}>")));
                prev_end = blk.end;
            }
        }
    }

    /// Text made of tag fragments, near-miss fragments and arbitrary characters.
    fn tag_text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(vec![
                "<think>", "</think>", "<tool_call>", "</tool_call>", "<response>",
                "</response>", "<plan>", "</plan>",
            ])
            .prop_map(str::to_string),
            2 => prop::sample::select(vec![
                "<", ">", "/", "</", "think", "<thi", "nk>", "<think", "</think", "plan>",
                "<<think>>", "</<think>>", "\n", " ", "é", "🦀", "{\"name\": \"a\"}",
            ])
            .prop_map(str::to_string),
            1 => "\\PC{0,6}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(Config {
            cases: 2000,
            rng_seed: RngSeed::Fixed(0x7a65_5f23),
            failure_persistence: None,
            ..Config::default()
        })]

        #[test]
        fn linear_scan_matches_the_reference(text in tag_text()) {
            assert_same(&text);
        }
    }

    #[test]
    fn hand_picked_inputs_match_the_reference() {
        for t in [
            "",
            "<think>",
            "</think>",
            "<think></think>",
            "<think><think></think>",
            "</think><think>a</think></think>",
            "<think>a<think>b</think>c</think>",
            "<think>a</think><tool_call>x</tool_call><tool_call>y<response>z</response>",
            "x</plan>y<plan>1. a</plan></plan><plan>",
            "<think></think ><think/>< think>",
        ] {
            assert_same(t);
        }
    }

    fn work(text: &str, reference: bool) -> usize {
        let mut issues = Vec::new();
        if reference {
            find_blocks_reference(text, "think", &mut issues).1
        } else {
            scan_blocks(text, "think", &mut issues).1
        }
    }

    /// `<think>` x 4,681 (32 KB) and a 4x longer input: the work of the scan grows linearly
    /// (measured by counting work, not by timing), while the old scan's grew quadratically.
    #[test]
    fn repeated_unclosed_tags_scan_in_linear_work() {
        let inputs = [
            ("<think>", ""),
            ("<think>", "</think>"),
            ("<think>x", ""),
            ("<think>\n</tool_call>", ""),
        ];
        for (unit, tail) in inputs {
            let n = 32 * 1024 / unit.len();
            let small = format!("{}{tail}", unit.repeat(n));
            let large = format!("{}{tail}", unit.repeat(4 * n));
            assert_same(&small);
            let (ws, wl) = (work(&small, false), work(&large, false));
            assert!(
                ws <= 8 * small.len(),
                "{unit:?}: work {ws} for {} bytes",
                small.len()
            );
            assert!(
                wl * 10 <= ws * 45,
                "{unit:?}: 4x the input took {:.1}x the work",
                wl as f64 / ws as f64
            );
            // The old scan on 1/8 of these sizes (it is slow): 4x the input, ~16x the work.
            let n = n / 8;
            let small = format!("{}{tail}", unit.repeat(n));
            let large = format!("{}{tail}", unit.repeat(4 * n));
            let (rs, rl) = (work(&small, true), work(&large, true));
            assert!(rl > 12 * rs, "the reference is quadratic here ({unit:?})");
        }
        let mut issues = Vec::new();
        let text = "<think>".repeat(4 * 4681);
        let blocks = find_blocks(&text, "think", &mut issues);
        assert_eq!(blocks.len(), 4 * 4681);
        assert_eq!(issues.len(), 4 * 4681);
    }
}
