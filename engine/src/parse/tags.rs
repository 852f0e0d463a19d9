//! Tag scanning shared by the executor and planner parsers.
use super::ParseIssue;

/// One `<tag>…</tag>` region of the text.
#[derive(Debug, Clone)]
pub(crate) struct Block<'a> {
    /// Byte offset of `<tag>`.
    pub start: usize,
    /// Byte offset just past `</tag>` (or the end of the unclosed region).
    pub end: usize,
    pub inner: &'a str,
}

/// Every `<tag>` region of `text`, in order. Unclosed regions run to the next `<tag>` or the end
/// of the text and are reported; stray `</tag>` are reported too.
pub(crate) fn find_blocks<'a>(
    text: &'a str,
    tag: &str,
    issues: &mut Vec<ParseIssue>,
) -> Vec<Block<'a>> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut blocks = Vec::new();
    let mut pos = 0usize;
    let mut stray_reported = false;
    while pos <= text.len() {
        let rest = &text[pos..];
        let next_open = rest.find(&open).map(|i| i + pos);
        let search_end = next_open.unwrap_or(text.len());
        if !stray_reported && text[pos..search_end].contains(&close) {
            issues.push(ParseIssue::UnopenedTag {
                tag: tag.to_string(),
            });
            stray_reported = true;
        }
        let Some(o) = next_open else { break };
        let inner_start = o + open.len();
        let after = &text[inner_start..];
        let c = after.find(&close).map(|i| i + inner_start);
        let o2 = after.find(&open).map(|i| i + inner_start);
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
    blocks
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
