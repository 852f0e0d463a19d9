//! The bounded trajectory buffer behind the trajectory stream, with filters, search and freeze.

use std::collections::VecDeque;

use cahl_sessions::{TrajectoryRecord, TrajectorySummary};

/// The misalignment labels of failed plans (the engine's `eval::taxonomy`), with the short
/// names the stream shows.
pub const FAILURE_LABELS: [(&str, &str); 7] = [
    ("plan_unparsable", "no-plan"),
    ("plan_missing_call", "missing"),
    ("subtask_value_missing", "no-value"),
    ("plan_too_coarse", "coarse"),
    ("plan_too_fine", "fine"),
    ("executor_failed", "exec"),
    ("final_state_wrong", "state"),
];

/// The short name of a failure label (the label itself when unknown, cut to 8 characters).
pub fn short_label(label: &str) -> String {
    FAILURE_LABELS
        .iter()
        .find(|(l, _)| *l == label)
        .map(|(_, s)| s.to_string())
        .unwrap_or_else(|| label.chars().take(8).collect())
}

/// Which trajectories the stream shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filter {
    /// Everything.
    #[default]
    All,
    /// Only trajectories where no plan solved the task.
    Failures,
    /// Only trajectories flagged as planner–executor misaligned.
    Misaligned,
    /// Only failed trajectories whose best plan carries this label (index into
    /// [`FAILURE_LABELS`]).
    Label(usize),
}

impl Filter {
    /// The next filter in the `f` key cycle, without items to look at: all, failures,
    /// misaligned, then every label.
    pub fn next(self) -> Filter {
        match self {
            Filter::All => Filter::Failures,
            Filter::Failures => Filter::Misaligned,
            Filter::Misaligned => Filter::Label(0),
            Filter::Label(i) if i + 1 < FAILURE_LABELS.len() => Filter::Label(i + 1),
            Filter::Label(_) => Filter::All,
        }
    }

    /// The next filter, skipping labels that no failed item carries (`present`: the labels of
    /// the failed items).
    pub fn next_among(self, present: &[&str]) -> Filter {
        let mut f = self.next();
        while let Filter::Label(i) = f {
            if present.contains(&FAILURE_LABELS[i].0) {
                return f;
            }
            f = f.next();
        }
        f
    }

    /// Label shown in the pane title.
    pub fn label(self) -> &'static str {
        match self {
            Filter::All => "all",
            Filter::Failures => "failures",
            Filter::Misaligned => "misaligned",
            Filter::Label(i) => FAILURE_LABELS.get(i).map_or("?", |l| l.0),
        }
    }

    fn accepts(self, item: &TrajItem) -> bool {
        match self {
            Filter::All => true,
            Filter::Failures => !item.success,
            Filter::Misaligned => item.misaligned,
            Filter::Label(i) => {
                !item.success && item.failure.as_deref() == FAILURE_LABELS.get(i).map(|l| l.0)
            }
        }
    }
}

/// One trajectory in the stream: the one-line summary, plus the full record while it is cached.
#[derive(Debug, Clone, PartialEq)]
pub struct TrajItem {
    /// Position in arrival order (unique, increasing; the reader's entry index).
    pub seq: u64,
    /// Index of the entry in the session reader.
    pub disk_index: Option<usize>,
    /// Step the trajectory was sampled for.
    pub step: u64,
    /// Task id.
    pub task_id: String,
    /// Task text, once known (for lines read as they were appended; otherwise after loading).
    pub task_text: Option<String>,
    /// Number of plans (G_h) and sub-tasks of the best plan, once known.
    pub plan_len: Option<(usize, usize)>,
    /// The best plan's misalignment label when it failed, once known.
    pub failure: Option<String>,
    /// Its side (`planner` or `executor`).
    pub failure_side: Option<String>,
    /// Some plan solved the task.
    pub success: bool,
    /// Flagged as misaligned.
    pub misaligned: bool,
    /// Mean planner reward.
    pub planner_reward: f64,
    /// Mean executor reward.
    pub executor_reward: f64,
    /// The full record, while cached in memory.
    pub record: Option<Box<TrajectoryRecord>>,
}

impl TrajItem {
    /// Builds an item from a full record (a newly appended line, or a loaded entry).
    pub fn from_record(seq: u64, disk_index: Option<usize>, rec: Box<TrajectoryRecord>) -> Self {
        let mut item = TrajItem::from_summary(seq, disk_index, &TrajectorySummary::from(&*rec));
        item.fill_from(&rec);
        item.record = Some(rec);
        item
    }

    /// Builds an item from an index summary, without the full record.
    pub fn from_summary(seq: u64, disk_index: Option<usize>, s: &TrajectorySummary) -> Self {
        TrajItem {
            seq,
            disk_index,
            step: s.step,
            task_id: s.task.id.clone(),
            task_text: (!s.task.text.is_empty()).then(|| s.task.text.clone()),
            plan_len: s.plan_shape.as_ref().map(|g| (g.plans, g.subtasks)),
            failure: s.plan_shape.as_ref().and_then(|g| g.failure.clone()),
            failure_side: s.plan_shape.as_ref().and_then(|g| g.failure_side.clone()),
            success: s.success,
            misaligned: s.misaligned,
            planner_reward: s.planner_reward,
            executor_reward: s.executor_reward,
            record: None,
        }
    }

    /// Fills the fields that only the full record has (task text, plan length).
    pub fn fill_from(&mut self, rec: &TrajectoryRecord) {
        self.task_text = Some(rec.task.text.clone());
        let g = cahl_sessions::records::plans_glance(rec);
        self.plan_len = Some((g.plans, g.subtasks));
        self.failure = g.failure;
        self.failure_side = g.failure_side;
    }

    fn matches(&self, query: &str) -> bool {
        if query.is_empty() {
            return true;
        }
        let q = query.to_lowercase();
        self.task_id.to_lowercase().contains(&q)
            || self
                .task_text
                .as_deref()
                .is_some_and(|t| t.to_lowercase().contains(&q))
    }
}

/// `(number of plans, sub-tasks of the best-rewarded plan)`.
pub fn plan_shape(rec: &TrajectoryRecord) -> (usize, usize) {
    let g = cahl_sessions::records::plans_glance(rec);
    (g.plans, g.subtasks)
}

/// The rows of a plan in the expanded view: its sub-tasks, and the steps past them under their
/// own labels (flat and steptool turns, which have no plan; ih-grpo calls past the last
/// sub-task).
pub fn plan_rows(p: &cahl_sessions::PlanRecord) -> usize {
    let steps = p.steps.iter().map(|s| s.subtask_index + 1).max();
    p.subtasks.len().max(steps.unwrap_or(0))
}

/// Upper bound on the number of lines of the expanded view of `rec` (before wrapping), used to
/// keep scrolling within the content.
pub fn detail_line_bound(rec: &TrajectoryRecord) -> usize {
    let text = |s: &str| s.lines().count().max(1);
    let mut n = 6 + text(&rec.task.text) + rec.task.gold_plan.len();
    for p in &rec.plans {
        // One label (and a "not executed" line) per row.
        n += 4 + text(&p.raw_text) + plan_rows(p) * 2 + p.steps.len() * 2;
        n += p.final_response.as_deref().map_or(0, text);
        for st in &p.steps {
            for smp in &st.samples {
                n += 4 + text(&smp.raw_text) + smp.calls.len();
            }
        }
    }
    n
}

/// Bounded, filterable list of trajectories, newest shown first.
#[derive(Debug, Clone)]
pub struct TrajList {
    items: VecDeque<TrajItem>,
    capacity: usize,
    full_capacity: usize,
    next_seq: u64,
    /// Items dropped from the front because the buffer was full (they stay on disk).
    pub dropped: u64,
    /// Active filter.
    pub filter: Filter,
    /// Active search (matches task id or text, case-insensitive); empty = none.
    pub search: String,
    /// When frozen, items arriving after this seq are hidden until unfrozen.
    pub frozen_at: Option<u64>,
    /// Selected item (by seq); `None` = follow the newest.
    pub selected: Option<u64>,
    /// Whether the selected item is expanded into its plan tree.
    pub expanded: bool,
    /// Scroll offset (lines) of the expanded view.
    pub detail_scroll: usize,
    /// The newest trajectory's (step, policy version), when its record says it.
    pub policy: Option<(u64, u64)>,
}

impl TrajList {
    /// An empty list keeping at most `capacity` items, of which at most `full_capacity` (the
    /// newest) keep their full record in memory.
    pub fn new(capacity: usize, full_capacity: usize) -> Self {
        TrajList {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            full_capacity,
            next_seq: 0,
            dropped: 0,
            filter: Filter::All,
            search: String::new(),
            frozen_at: None,
            selected: None,
            expanded: false,
            detail_scroll: 0,
            policy: None,
        }
    }

    /// Total number of items held (ignoring filters).
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if no items are held.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes everything (e.g. the file was replaced on disk).
    pub fn clear(&mut self) {
        self.items.clear();
        self.selected = None;
        self.expanded = false;
        self.detail_scroll = 0;
    }

    /// Appends a session entry with its reader index, and its full record if already parsed;
    /// drops the oldest item beyond the capacity and the full record of items older than the
    /// newest `full_capacity`.
    pub fn push_entry(
        &mut self,
        disk_index: usize,
        summary: &TrajectorySummary,
        record: Option<Box<TrajectoryRecord>>,
    ) {
        let seq = self.next_seq.max(disk_index as u64);
        self.next_seq = seq + 1;
        if let Some(v) = record.as_ref().and_then(|r| r.policy_version) {
            let step = record.as_ref().map_or(0, |r| r.step);
            if self.policy.is_none_or(|(s, _)| step >= s) {
                self.policy = Some((step, v));
            }
        }
        let item = match record {
            Some(r) => TrajItem::from_record(seq, Some(disk_index), r),
            None => TrajItem::from_summary(seq, Some(disk_index), summary),
        };
        self.push(item);
    }

    fn push(&mut self, item: TrajItem) {
        self.items.push_back(item);
        while self.items.len() > self.capacity {
            if let Some(old) = self.items.pop_front() {
                self.dropped += 1;
                if self.selected == Some(old.seq) {
                    self.selected = None;
                    self.expanded = false;
                }
            }
        }
        let n = self.items.len();
        if n > self.full_capacity {
            let keep_from = n - self.full_capacity;
            // Only the item that just left the window can still hold a record from a push.
            if let Some(it) = self.items.get_mut(keep_from.saturating_sub(1)) {
                if Some(it.seq) != self.selected {
                    it.record = None;
                }
            }
        }
    }

    /// Item by seq.
    pub fn get(&self, seq: u64) -> Option<&TrajItem> {
        let i = self.items.binary_search_by_key(&seq, |it| it.seq).ok()?;
        self.items.get(i)
    }

    /// Mutable item by seq.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut TrajItem> {
        let i = self.items.binary_search_by_key(&seq, |it| it.seq).ok()?;
        self.items.get_mut(i)
    }

    /// Stores a loaded record for `seq`, evicting other loaded records beyond the cache budget.
    pub fn set_record(&mut self, seq: u64, rec: Box<TrajectoryRecord>) {
        if let Some(it) = self.get_mut(seq) {
            it.fill_from(&rec);
            it.record = Some(rec);
        }
        let cached: Vec<u64> = self
            .items
            .iter()
            .filter(|it| it.record.is_some())
            .map(|it| it.seq)
            .collect();
        if cached.len() > self.full_capacity.max(1) {
            let excess = cached.len() - self.full_capacity.max(1);
            for s in cached.into_iter().filter(|s| *s != seq).take(excess) {
                if Some(s) != self.selected {
                    if let Some(it) = self.get_mut(s) {
                        it.record = None;
                    }
                }
            }
        }
    }

    /// Seqs of the items shown, newest first, after freeze, filter and search.
    pub fn visible(&self) -> Vec<u64> {
        self.items
            .iter()
            .rev()
            .filter(|it| self.frozen_at.is_none_or(|f| it.seq <= f))
            .filter(|it| self.filter.accepts(it))
            .filter(|it| it.matches(&self.search))
            .map(|it| it.seq)
            .collect()
    }

    /// The selected item if it is visible, else the first visible one.
    pub fn current(&self) -> Option<u64> {
        let vis = self.visible();
        match self.selected {
            Some(s) if vis.contains(&s) => Some(s),
            _ => vis.first().copied(),
        }
    }

    /// Moves the selection by `delta` rows within the visible list.
    pub fn move_selection(&mut self, delta: isize) {
        let vis = self.visible();
        if vis.is_empty() {
            self.selected = None;
            return;
        }
        let pos = self
            .current()
            .and_then(|c| vis.iter().position(|s| *s == c))
            .unwrap_or(0);
        let new = (pos as isize + delta).clamp(0, vis.len() as isize - 1) as usize;
        self.selected = Some(vis[new]);
    }

    /// Toggles freeze: while frozen, new arrivals are buffered but not shown.
    pub fn toggle_freeze(&mut self) {
        self.frozen_at = match self.frozen_at {
            Some(_) => None,
            None => Some(self.next_seq.saturating_sub(1)),
        };
    }

    /// Number of items hidden because of freeze.
    pub fn hidden_by_freeze(&self) -> usize {
        match self.frozen_at {
            Some(f) => self.items.iter().filter(|it| it.seq > f).count(),
            None => 0,
        }
    }

    /// Selects the newest visible trajectory sampled at or before `step` (or the oldest one if
    /// all are later). Returns false if nothing is visible.
    pub fn jump_to_step(&mut self, step: u64) -> bool {
        let vis = self.visible();
        let target = vis
            .iter()
            .copied()
            .find(|s| self.get(*s).is_some_and(|it| it.step <= step))
            .or_else(|| vis.last().copied());
        self.selected = target;
        self.detail_scroll = 0;
        target.is_some()
    }

    /// Iterates over all held items, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &TrajItem> {
        self.items.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(seq: u64, success: bool, failure: Option<&str>) -> TrajItem {
        TrajItem {
            seq,
            disk_index: None,
            step: seq,
            task_id: format!("t-{seq}"),
            task_text: None,
            plan_len: None,
            failure: failure.map(String::from),
            failure_side: None,
            success,
            misaligned: false,
            planner_reward: 0.0,
            executor_reward: 0.0,
            record: None,
        }
    }

    /// The header's policy version follows the newest step's trajectory, whatever the order
    /// of arrival within it.
    #[test]
    fn the_newest_steps_policy_version_is_kept() {
        let mut l = TrajList::new(10, 10);
        let summary = TrajectorySummary::default();
        for (i, (step, v)) in [
            (3u64, Some(2u64)),
            (4, Some(1)),
            (4, Some(3)),
            (2, Some(1)),
            (5, None),
        ]
        .into_iter()
        .enumerate()
        {
            let r = TrajectoryRecord {
                step,
                policy_version: v,
                ..TrajectoryRecord::default()
            };
            l.push_entry(i, &summary, Some(Box::new(r)));
        }
        // The last of step 4's arrivals (step 5's record has no version, step 2's is older).
        assert_eq!(l.policy, Some((4, 3)));
    }

    /// `f` cycles all → failures → misaligned → each label some failed item carries → all,
    /// and a label filter keeps the failed items with that label.
    #[test]
    fn the_filter_cycles_through_the_labels_present() {
        let items = [
            item(1, false, Some("plan_too_coarse")),
            item(2, false, Some("executor_failed")),
            item(3, true, None),
        ];
        let present: Vec<&str> = items
            .iter()
            .filter(|it| !it.success)
            .filter_map(|it| it.failure.as_deref())
            .collect();
        let mut f = Filter::All;
        let mut seen = Vec::new();
        for _ in 0..6 {
            f = f.next_among(&present);
            seen.push(f.label());
        }
        assert_eq!(
            seen,
            [
                "failures",
                "misaligned",
                "plan_too_coarse",
                "executor_failed",
                "all",
                "failures"
            ]
        );
        let coarse = Filter::Label(3);
        assert_eq!(coarse.label(), "plan_too_coarse");
        let kept: Vec<u64> = items
            .iter()
            .filter(|it| coarse.accepts(it))
            .map(|it| it.seq)
            .collect();
        assert_eq!(kept, vec![1]);
        assert_eq!(short_label("subtask_value_missing"), "no-value");
        assert_eq!(short_label("something_else_entirely"), "somethin");
    }
}
