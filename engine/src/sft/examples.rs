//! Tokenized examples: gold conversations through a chat template and tokenizer, their
//! per-role statistics, and the one-role batches a run draws.
use std::collections::HashMap;

use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use super::data::{GoldText, Role};
use crate::chat::{ChatTemplate, Message};
use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// A tokenized example.
#[derive(Debug, Clone)]
pub struct SftExample {
    pub role: Role,
    pub prompt: Vec<u32>,
    /// Completion tokens, ending with the end-of-turn token.
    pub completion: Vec<u32>,
}

/// Tokenize gold conversations with `template` (generation prompt appended) and `tok`.
pub fn tokenize_examples(
    texts: &[GoldText],
    tok: &Tokenizer,
    template: &ChatTemplate,
    end_of_turn: &str,
) -> Result<Vec<SftExample>> {
    texts
        .iter()
        .map(|g| {
            let p = template.render(
                &[Message::system(&g.system), Message::user(&g.user)],
                None,
                true,
            )?;
            Ok(SftExample {
                role: g.role,
                prompt: tok.encode(&p, false)?,
                completion: tok.encode(&format!("{}{end_of_turn}", g.completion), false)?,
            })
        })
        .collect()
}

/// Per role: (examples, mean prompt tokens, mean completion tokens).
pub fn example_stats(examples: &[SftExample]) -> Vec<(Role, usize, f64, f64)> {
    Role::ALL
        .iter()
        .map(|&r| {
            let v: Vec<&SftExample> = examples.iter().filter(|e| e.role == r).collect();
            let n = v.len().max(1) as f64;
            let p = v.iter().map(|e| e.prompt.len()).sum::<usize>() as f64 / n;
            let c = v.iter().map(|e| e.completion.len()).sum::<usize>() as f64 / n;
            (r, v.len(), p, c)
        })
        .collect()
}

/// Batches of one role each, shuffled deterministically for `epoch`.
pub(super) fn role_batches(
    examples: &[SftExample],
    batch: usize,
    rng: &mut ChaCha8Rng,
) -> Vec<Vec<usize>> {
    let mut by_role: HashMap<Role, Vec<usize>> = HashMap::new();
    for (i, e) in examples.iter().enumerate() {
        by_role.entry(e.role).or_default().push(i);
    }
    let mut batches = Vec::new();
    for r in Role::ALL {
        let Some(idx) = by_role.get_mut(&r) else {
            continue;
        };
        idx.shuffle(rng);
        for c in idx.chunks(batch.max(1)) {
            batches.push(c.to_vec());
        }
    }
    batches.shuffle(rng);
    batches
}
