//! The `search` tool world used by the Bamboogle search-QA benchmark, backed by a
//! [tantivy](https://docs.rs/tantivy) BM25 index over a JSONL corpus of `{title, text}` documents.
//!
//! Scoring is tantivy's BM25 (k1 = 1.2, b = 0.75). Title and text are indexed together in one
//! `body` field with tantivy's default tokenizer (split on non-alphanumerics, lowercase, drop
//! tokens over 40 bytes); a query is tokenized the same way and its distinct terms are OR-ed, so
//! user text never goes through a query-syntax parser and cannot fail to parse.
//!
//! The index directory is written only by `cahl-tui index build` ([`Bm25Index::build_dir`]) and
//! read when the world is opened ([`Bm25Index::open`]); a tool call only queries the already
//! opened index (no network, no filesystem paths from the model).
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value as _, STORED,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::{Observation, Task, ToolCall, ToolSchema, World, WorldError};

/// Most documents indexed.
pub const MAX_DOCS: usize = 2_000_000;
/// Longest document text kept, in bytes.
pub const MAX_DOC_BYTES: usize = 16 * 1024;
/// Longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 512;
/// Indexing memory budget (one indexing thread, so documents keep corpus order).
const WRITER_BUDGET_BYTES: usize = 64 * 1024 * 1024;
const F_ID: &str = "id";
const F_TITLE: &str = "title";
const F_TEXT: &str = "text";
const F_BODY: &str = "body";

/// One corpus document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Doc {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub text: String,
}

/// A search hit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// Position of the document in the corpus (0-based).
    pub doc: usize,
    pub score: f32,
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    text: Field,
    body: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let id = b.add_u64_field(F_ID, STORED);
    let title = b.add_text_field(F_TITLE, STORED);
    let text = b.add_text_field(F_TEXT, STORED);
    // Term frequencies are all BM25 needs; positions would only serve phrase queries.
    let body_opts = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("default")
            .set_index_option(IndexRecordOption::WithFreqs),
    );
    let body = b.add_text_field(F_BODY, body_opts);
    (
        b.build(),
        Fields {
            id,
            title,
            text,
            body,
        },
    )
}

fn data_err(path: &Path) -> impl Fn(String) -> WorldError {
    let path = path.display().to_string();
    move |msg| WorldError::Data {
        path: path.clone(),
        msg,
    }
}

/// Why a corpus line was rejected.
#[derive(Debug, thiserror::Error)]
enum LineError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("expected a JSON object")]
    NotObject,
    #[error("no title or text")]
    Empty,
}

/// Parse one JSONL corpus line (`{"title", "text"}`; `contents` is accepted for `text`).
/// `Ok(None)` for a blank line.
fn parse_line(line: &str) -> Result<Option<Doc>, LineError> {
    if line.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(line)?;
    if !v.is_object() {
        return Err(LineError::NotObject);
    }
    let title = v
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let text = v
        .get("text")
        .or_else(|| v.get("contents"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if title.is_empty() && text.is_empty() {
        return Err(LineError::Empty);
    }
    Ok(Some(Doc { title, text }))
}

/// Add `docs` (in order) to a fresh `index` and commit. `err` names the source of a bad document.
fn fill(
    index: &Index,
    f: Fields,
    docs: impl Iterator<Item = Result<Doc, WorldError>>,
    err: &dyn Fn(String) -> WorldError,
) -> Result<(), WorldError> {
    let mut writer: IndexWriter<TantivyDocument> = index
        .writer_with_num_threads(1, WRITER_BUDGET_BYTES)
        .map_err(|e| err(format!("opening index writer: {e}")))?;
    for (i, d) in docs.take(MAX_DOCS).enumerate() {
        let d = d?;
        let text = crate::parse::clip(&d.text, MAX_DOC_BYTES);
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.id, i as u64);
        doc.add_text(f.title, &d.title);
        doc.add_text(f.text, text);
        doc.add_text(f.body, format!("{} {}", d.title, text));
        writer
            .add_document(doc)
            .map_err(|e| err(format!("indexing document {}: {e}", i + 1)))?;
    }
    writer
        .commit()
        .map_err(|e| err(format!("committing index: {e}")))?;
    writer
        .wait_merging_threads()
        .map_err(|e| err(format!("merging index segments: {e}")))
}

/// A tantivy BM25 index (in memory, or opened from a directory built by `index build`).
#[derive(Clone)]
pub struct Bm25Index {
    index: Index,
    reader: IndexReader,
    analyzer: TextAnalyzer,
    fields: Fields,
    /// Where the index came from, for error messages.
    origin: String,
}

impl std::fmt::Debug for Bm25Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Index")
            .field("origin", &self.origin)
            .field("docs", &self.len())
            .finish()
    }
}

impl Bm25Index {
    /// Build an in-memory index from documents (title and text are both indexed).
    pub fn build(docs: Vec<Doc>) -> Result<Self, WorldError> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        let err = data_err(Path::new("<in-memory index>"));
        fill(&index, fields, docs.into_iter().map(Ok), &err)?;
        Self::from_index(index, "<in-memory index>")
    }

    /// Build an in-memory index from a JSONL corpus file (see [`Bm25Index::build_dir`] for the
    /// format).
    pub fn from_jsonl(path: &Path) -> Result<Self, WorldError> {
        let (schema, fields) = schema();
        let index = Index::create_in_ram(schema);
        fill(&index, fields, read_jsonl(path)?, &data_err(path))?;
        Self::from_index(index, "<in-memory index>")
    }

    /// Index a JSONL corpus (`{"title", "text"}` per line; `contents` is accepted for `text`;
    /// blank lines are skipped) into the directory `out`, which must not exist or be empty, and
    /// open the result. On failure nothing is left in `out`.
    pub fn build_dir(corpus: &Path, out: &Path) -> Result<Self, WorldError> {
        let out_err = data_err(out);
        let existed = out.exists();
        if existed {
            let mut entries = std::fs::read_dir(out)
                .map_err(|e| out_err(format!("not a usable output directory: {e}")))?;
            if entries.next().is_some() {
                return Err(out_err(
                    "output directory is not empty (remove it or choose another)".into(),
                ));
            }
        } else {
            std::fs::create_dir_all(out)
                .map_err(|e| out_err(format!("creating directory: {e}")))?;
        }
        let result = (|| {
            let docs = read_jsonl(corpus)?;
            let (schema, fields) = schema();
            let index = Index::create_in_dir(out, schema)
                .map_err(|e| out_err(format!("creating index: {e}")))?;
            fill(&index, fields, docs, &out_err)?;
            drop(index);
            Self::open(out)
        })();
        if result.is_err() {
            // `out` was missing or empty before, so everything in it is ours.
            if existed {
                if let Ok(entries) = std::fs::read_dir(out) {
                    for e in entries.flatten() {
                        let p = e.path();
                        let _ = if p.is_dir() {
                            std::fs::remove_dir_all(&p)
                        } else {
                            std::fs::remove_file(&p)
                        };
                    }
                }
            } else {
                let _ = std::fs::remove_dir_all(out);
            }
        }
        result
    }

    /// Open an index directory written by [`Bm25Index::build_dir`] (`cahl-tui index build`).
    pub fn open(dir: &Path) -> Result<Self, WorldError> {
        let err = data_err(dir);
        if !dir.is_dir() {
            return Err(err(
                "no such index directory (build one with `cahl-tui index build`)".into(),
            ));
        }
        let index = Index::open_in_dir(dir)
            .map_err(|e| err(format!("not a readable tantivy index: {e}")))?;
        Self::from_index(index, &dir.display().to_string())
    }

    fn from_index(index: Index, origin: &str) -> Result<Self, WorldError> {
        let err = data_err(Path::new(origin));
        let schema = index.schema();
        let field = |name: &str| {
            schema.get_field(name).map_err(|_| {
                err(format!(
                    "not a search index built by `cahl-tui index build` (no field {name:?})"
                ))
            })
        };
        let fields = Fields {
            id: field(F_ID)?,
            title: field(F_TITLE)?,
            text: field(F_TEXT)?,
            body: field(F_BODY)?,
        };
        let analyzer = index
            .tokenizer_for_field(fields.body)
            .map_err(|e| err(format!("index tokenizer: {e}")))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(|e| err(format!("opening index reader: {e}")))?;
        Ok(Bm25Index {
            index,
            reader,
            analyzer,
            fields,
            origin: origin.to_string(),
        })
    }

    /// Number of indexed documents.
    pub fn len(&self) -> usize {
        self.reader.searcher().num_docs() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The underlying tantivy index.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Top `k` documents for `query` by BM25, best first (ties by corpus order); empty on an
    /// index read error (see [`Bm25Index::try_search`]).
    pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
        self.try_search(query, k).unwrap_or_else(|e| {
            tracing::warn!("search failed: {e}");
            Vec::new()
        })
    }

    /// Top `k` documents for `query` by BM25, best first (ties by corpus order).
    pub fn try_search(&self, query: &str, k: usize) -> Result<Vec<Hit>, WorldError> {
        let err = data_err(Path::new(&self.origin));
        let searcher = self.reader.searcher();
        let k = k.min(searcher.num_docs() as usize);
        if k == 0 {
            return Ok(Vec::new());
        }
        let query = crate::parse::clip(query, MAX_QUERY_BYTES);
        let mut terms = Vec::new();
        let mut analyzer = self.analyzer.clone();
        analyzer
            .token_stream(query)
            .process(&mut |t| terms.push(t.text.clone()));
        terms.sort();
        terms.dedup();
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q = TermQuery::new(
                    Term::from_field_text(self.fields.body, t),
                    IndexRecordOption::WithFreqs,
                );
                (Occur::Should, Box::new(q) as Box<dyn Query>)
            })
            .collect();
        let top = searcher
            .search(
                &BooleanQuery::new(clauses),
                &TopDocs::with_limit(k).order_by_score(),
            )
            .map_err(|e| err(format!("search: {e}")))?;
        let mut hits = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let d: TantivyDocument = searcher
                .doc(addr)
                .map_err(|e| err(format!("reading stored document: {e}")))?;
            let text_of = |f: Field| {
                d.get_first(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            hits.push(Hit {
                doc: d
                    .get_first(self.fields.id)
                    .and_then(|v| v.as_u64())
                    .unwrap_or(u64::MAX) as usize,
                score,
                title: text_of(self.fields.title),
                text: text_of(self.fields.text),
            });
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.doc.cmp(&b.doc)));
        Ok(hits)
    }
}

/// Documents of a JSONL corpus, in order; a bad line is an error naming the file and line.
fn read_jsonl(path: &Path) -> Result<impl Iterator<Item = Result<Doc, WorldError>>, WorldError> {
    let err = data_err(path);
    let f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    Ok(std::io::BufReader::new(f)
        .lines()
        .enumerate()
        .filter_map(move |(i, line)| {
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(err(format!("line {}: {e}", i + 1)))),
            };
            parse_line(&line)
                .map_err(|m| err(format!("line {}: {m}", i + 1)))
                .transpose()
        }))
}

/// Schema of the `search` tool.
pub fn search_tool() -> ToolSchema {
    ToolSchema {
        name: "search".into(),
        description: "search an encyclopedia and return the best matching passages".into(),
        parameters: json!({"type": "object", "properties": {"query": {"type": "string", "description": "search words"}}, "required": ["query"]}),
    }
}

/// World with one `search` tool over a BM25 index.
#[derive(Debug, Clone)]
pub struct SearchWorld {
    index: Arc<Bm25Index>,
    top_k: usize,
    name: String,
}

impl SearchWorld {
    pub fn new(name: impl Into<String>, index: Arc<Bm25Index>, top_k: usize) -> Self {
        SearchWorld {
            index,
            top_k: top_k.clamp(1, 20),
            name: name.into(),
        }
    }
}

impl World for SearchWorld {
    fn name(&self) -> &str {
        &self.name
    }
    fn tools(&self) -> Vec<ToolSchema> {
        vec![search_tool()]
    }
    fn reset(&mut self, task: &Task) -> Result<(), WorldError> {
        if task.world != self.name {
            return Err(WorldError::WrongWorld {
                task: task.id.clone(),
                world: self.name.clone(),
            });
        }
        Ok(())
    }
    fn execute(&mut self, call: &ToolCall) -> Observation {
        if call.name != "search" {
            return Observation::error(format!("unknown tool {:?}", call.name));
        }
        let Some(q) = call.arguments.get("query").and_then(Value::as_str) else {
            return Observation::error("search: missing string query");
        };
        match self.index.try_search(q, self.top_k) {
            Ok(hits) => {
                let hits: Vec<Value> = hits
                    .into_iter()
                    .map(|h| json!({"title": h.title, "text": crate::parse::clip(&h.text, 600)}))
                    .collect();
                Observation::ok(json!({ "results": hits }))
            }
            Err(e) => Observation::error(format!("search failed: {e}")),
        }
    }
    fn final_state(&self) -> Option<Value> {
        None
    }

    fn fork(&self) -> Box<dyn World> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<Doc> {
        vec![
            Doc {
                title: "Citibank".into(),
                text: "Citibank was founded in 1812 in New York.".into(),
            },
            Doc {
                title: "James Madison".into(),
                text: "James Madison was president of the United States from 1809 to 1817.".into(),
            },
            Doc {
                title: "Uranus".into(),
                text: "Voyager 2 approached Uranus in 1986.".into(),
            },
        ]
    }

    fn write_jsonl(dir: &Path, docs: &[Doc]) -> std::path::PathBuf {
        let p = dir.join("corpus.jsonl");
        let lines: Vec<String> = docs
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        std::fs::write(&p, lines.join("\n\n") + "\n").unwrap();
        p
    }

    fn msg(e: WorldError) -> String {
        e.to_string()
    }

    #[test]
    fn ranks_relevant_docs_first() {
        let idx = Bm25Index::build(corpus()).unwrap();
        assert_eq!(idx.len(), 3);
        let hits = idx.search("when was Citibank founded?", 2);
        assert_eq!(hits[0].title, "Citibank");
        assert_eq!(hits[0].doc, 0);
        assert!(hits[0].text.contains("1812"));
        assert!(hits[0].score > 0.0);
        // "was" is in two documents, so the second hit is a weaker (common-term-only) match.
        assert_eq!(hits.len(), 2);
        assert!(hits[1].score < hits[0].score);
        assert_eq!(idx.search("PRESIDENT 1809", 1)[0].title, "James Madison");
        assert!(idx.search("zzz", 3).is_empty());
        assert!(idx.search("  ?! ", 3).is_empty());
        assert!(idx.search("uranus", 0).is_empty());
        // Query-syntax characters are plain text, never a parse error.
        assert_eq!(idx.search("title:(uranus \"voyager", 5)[0].title, "Uranus");
    }

    #[test]
    fn scores_are_bm25() {
        // Exact BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) / (df + 0.5))) on a tiny
        // corpus; document lengths are small enough for tantivy's fieldnorms to be exact.
        let docs = vec![
            Doc {
                title: "a".into(),
                text: "apple apple banana".into(),
            },
            Doc {
                title: "b".into(),
                text: "apple cherry cherry cherry cherry cherry cherry cherry".into(),
            },
            Doc {
                title: "c".into(),
                text: "banana cherry".into(),
            },
        ];
        let lens = [4.0f32, 9.0, 3.0]; // title token + text tokens
        let avg = lens.iter().sum::<f32>() / 3.0;
        let bm25 = |tf: f32, df: f32, dl: f32| {
            let idf = (1.0 + (3.0 - df + 0.5) / (df + 0.5)).ln();
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avg))
        };
        let idx = Bm25Index::build(docs).unwrap();
        let hits = idx.search("apple", 5);
        assert_eq!(hits.iter().map(|h| h.doc).collect::<Vec<_>>(), vec![0, 1]);
        assert!(
            (hits[0].score - bm25(2.0, 2.0, 4.0)).abs() < 1e-3,
            "{hits:?}"
        );
        assert!(
            (hits[1].score - bm25(1.0, 2.0, 9.0)).abs() < 1e-3,
            "{hits:?}"
        );
        // Scores of distinct query terms add up; a repeated query term counts once.
        let hits = idx.search("banana apple apple", 5);
        assert_eq!(hits[0].doc, 0);
        let want = bm25(2.0, 2.0, 4.0) + bm25(1.0, 2.0, 4.0);
        assert!((hits[0].score - want).abs() < 1e-3, "{hits:?}");
    }

    #[test]
    fn builds_and_opens_an_index_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let corpus_path = write_jsonl(tmp.path(), &corpus());
        let out = tmp.path().join("index");
        let idx = Bm25Index::build_dir(&corpus_path, &out).unwrap();
        assert_eq!(idx.len(), 3);
        drop(idx);
        let back = Bm25Index::open(&out).unwrap();
        let hits = back.search("uranus voyager", 3);
        assert_eq!(hits[0].title, "Uranus");
        assert_eq!(hits[0].doc, 2);
        // The in-memory build from the same file ranks identically.
        let mem = Bm25Index::from_jsonl(&corpus_path).unwrap();
        assert_eq!(mem.search("uranus voyager", 3), hits);
        // Building into a non-empty directory is refused.
        let e = msg(Bm25Index::build_dir(&corpus_path, &out).unwrap_err());
        assert!(e.contains("not empty") && e.contains("index"), "{e}");
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let tmp = tempfile::tempdir().unwrap();
        // Bad JSONL line: names the file and line, and leaves no half-built index behind.
        let bad = tmp.path().join("bad.jsonl");
        std::fs::write(&bad, "{\"title\": \"ok\", \"text\": \"fine\"}\n{oops\n").unwrap();
        let out = tmp.path().join("out");
        let e = msg(Bm25Index::build_dir(&bad, &out).unwrap_err());
        assert!(e.contains("bad.jsonl") && e.contains("line 2"), "{e}");
        assert!(!out.exists());
        std::fs::write(&bad, "{\"title\": \"\"}\n").unwrap();
        let e = msg(Bm25Index::from_jsonl(&bad).unwrap_err());
        assert!(
            e.contains("line 1") && e.contains("no title or text"),
            "{e}"
        );
        std::fs::write(&bad, "[1]\n").unwrap();
        assert!(msg(Bm25Index::from_jsonl(&bad).unwrap_err()).contains("line 1"));
        let e = msg(Bm25Index::from_jsonl(&tmp.path().join("nope.jsonl")).unwrap_err());
        assert!(e.contains("nope.jsonl"), "{e}");
        // Missing index directory.
        let e = msg(Bm25Index::open(&tmp.path().join("missing")).unwrap_err());
        assert!(e.contains("missing") && e.contains("index build"), "{e}");
        // A directory that is not an index, and a corrupt one.
        let junk = tmp.path().join("junk");
        std::fs::create_dir(&junk).unwrap();
        let e = msg(Bm25Index::open(&junk).unwrap_err());
        assert!(e.contains("junk"), "{e}");
        std::fs::write(junk.join("meta.json"), "{ not json").unwrap();
        let e = msg(Bm25Index::open(&junk).unwrap_err());
        assert!(e.contains("junk") && e.contains("tantivy"), "{e}");
    }

    #[test]
    fn search_world_answers_and_reports_errors() {
        let idx = Bm25Index::build(corpus()).unwrap();
        let mut w = SearchWorld::new("bamboogle", Arc::new(idx), 2);
        let obs = w.execute(&ToolCall::new("search", json!({"query": "Uranus"})));
        assert!(obs.ok);
        assert_eq!(obs.content["results"][0]["title"], "Uranus");
        assert_eq!(obs.content["results"].as_array().unwrap().len(), 1);
        assert!(!w.execute(&ToolCall::new("search", json!({}))).ok);
        assert!(
            !w.execute(&ToolCall::new("lookup", json!({"query": "x"})))
                .ok
        );
    }
}
