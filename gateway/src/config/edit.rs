//! Writes a change to one section of the config file into the file's own text, so that
//! everything the change does not touch (comments, key order, quoting, blank lines)
//! survives byte for byte.
//!
//! A serializer round trip would lose every comment, so the edit works on the text:
//! a scalar that changes is replaced where it stands (its line's comment stays), a key
//! that is new is appended at the end of its mapping with the mapping's indentation, a
//! key set to `null` loses its lines. Anything this cannot do safely (a flow mapping,
//! an alias, a multi-line scalar in the way) is refused with where and why, and every
//! edit is checked before it is returned: the edited text must parse to exactly the
//! old document with the change merged in, or nothing is written.

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Why a section could not be written into the file.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    #[error("the config file does not parse as YAML: {0}")]
    Syntax(String),
    #[error("`{0}` is not a mapping in the file")]
    NotAMapping(String),
    #[error(
        "`{path}` (line {line}) is written in a form this edit cannot change safely ({why}); change it by hand"
    )]
    Unsupported {
        path: String,
        line: usize,
        why: &'static str,
    },
    #[error(
        "`{0}` is not a key this edit can write (letters, digits, '_' and '-', not a YAML number, boolean or null)"
    )]
    Key(String),
    #[error(
        "the change to `{0}` could not be written into the file's text exactly (the edited file would read back differently); nothing was written: change the file by hand"
    )]
    Unverified(String),
}

/// Merges `change` into the value at `path` (mapping keys from the document's root):
/// an object merges key by key, `null` removes a key, anything else replaces the
/// value. A mapping left empty is removed with its key. Returns the new text.
pub fn merge(text: &str, path: &[&str], change: &Json) -> Result<String, EditError> {
    let document = Document::parse(text)?;
    let unit = document.indent_unit(path);
    let (parent, key) = match path.split_last() {
        Some((key, parents)) => (document.mapping_at(parents)?, *key),
        None => return Err(EditError::NotAMapping(String::new())),
    };
    let mut edits = Edits::default();
    let shown_parent = path[..path.len() - 1].join(".");
    document.merge_entry(parent, &shown_parent, key, change, unit, &mut edits)?;
    let edited = edits
        .apply(text, &document.newline)
        .map_err(|()| EditError::Unverified(path.join(".")))?;
    verify(text, &edited, path, change)?;
    Ok(edited)
}

/// The value at `path` in the document, as JSON (`null` when absent).
pub fn section(text: &str, path: &[&str]) -> Result<Json, EditError> {
    let yaml: Yaml = serde_yaml::from_str(text).map_err(|e| EditError::Syntax(e.to_string()))?;
    let mut here = &yaml;
    for key in path {
        match here.get(key) {
            Some(value) => here = value,
            None => return Ok(Json::Null),
        }
    }
    serde_json::to_value(here).map_err(|e| EditError::Syntax(e.to_string()))
}

/// The edited text must be the old document with the change merged in, and nothing
/// else: whatever went wrong in the text edit, a wrong file is never written.
fn verify(old: &str, new: &str, path: &[&str], change: &Json) -> Result<(), EditError> {
    let mut expected: Yaml =
        serde_yaml::from_str(old).map_err(|e| EditError::Syntax(e.to_string()))?;
    let unverified = || EditError::Unverified(path.join("."));
    let change: Yaml = serde_yaml::to_value(change).map_err(|_| unverified())?;
    let (key, parents) = path.split_last().ok_or_else(unverified)?;
    let mut parent = &mut expected;
    for step in parents {
        parent = parent.get_mut(step).ok_or_else(unverified)?;
    }
    let parent = parent.as_mapping_mut().ok_or_else(unverified)?;
    merge_value(parent, key, &change);
    let actual: Yaml = serde_yaml::from_str(new).map_err(|_| unverified())?;
    if actual == expected {
        Ok(())
    } else {
        Err(unverified())
    }
}

/// The merge rule on values, which the text edit must reproduce.
fn merge_value(parent: &mut serde_yaml::Mapping, key: &str, change: &Yaml) {
    let key_value = Yaml::String(key.to_string());
    match change {
        Yaml::Null => {
            parent.remove(&key_value);
        }
        Yaml::Mapping(changes) => {
            let mut merged = match parent.get(&key_value) {
                Some(Yaml::Mapping(existing)) => existing.clone(),
                _ => serde_yaml::Mapping::new(),
            };
            for (k, v) in changes {
                if let Some(k) = k.as_str() {
                    merge_value(&mut merged, k, v);
                }
            }
            if merged.is_empty() {
                parent.remove(&key_value);
            } else {
                parent.insert(key_value, Yaml::Mapping(merged));
            }
        }
        other => {
            parent.insert(key_value, other.clone());
        }
    }
}

/// A node of the document with where it stands in the text (byte offsets).
#[derive(Debug)]
enum Node {
    Scalar {
        /// The scalar's own text, when it is on one line and can be replaced in place.
        span: Option<(usize, usize)>,
        line: usize,
    },
    Mapping {
        flow: bool,
        line: usize,
        entries: Vec<Entry>,
    },
    Sequence {
        line: usize,
    },
    Alias {
        line: usize,
    },
}

impl Node {
    fn line(&self) -> usize {
        match self {
            Node::Scalar { line, .. }
            | Node::Mapping { line, .. }
            | Node::Sequence { line }
            | Node::Alias { line } => *line,
        }
    }
}

#[derive(Debug)]
struct Entry {
    key: String,
    /// 0-based line and column (in characters) of the key.
    line: usize,
    column: usize,
    value: Node,
}

/// The document's lines and node tree.
struct Document<'a> {
    text: &'a str,
    /// Byte offset where each line starts (plus one past the end).
    line_starts: Vec<usize>,
    root: Node,
    newline: String,
}

/// Builds the node tree from the parser's events.
#[derive(Default)]
struct TreeBuilder {
    /// Byte offset where each line starts. Positions are taken from a marker's line
    /// and column, not its index: yaml-rust2 counts the index in bytes within some
    /// block scalars and in characters elsewhere.
    line_starts: Vec<usize>,
    source: String,
    stack: Vec<Partial>,
    root: Option<Node>,
}

enum Partial {
    Mapping {
        flow: bool,
        line: usize,
        entries: Vec<Entry>,
        key: Option<(String, usize, usize)>,
    },
    Sequence {
        line: usize,
    },
}

impl TreeBuilder {
    fn byte(&self, mark: &Marker) -> usize {
        let Some(&start) = self.line_starts.get(mark.line().saturating_sub(1)) else {
            return self.source.len();
        };
        let line = &self.source[start..];
        start
            + line
                .char_indices()
                .nth(mark.col())
                .map_or(line.len(), |(i, _)| i)
    }

    /// A finished node goes to its parent: a mapping's key, a mapping's value, an item.
    fn finish(&mut self, node: Node, key_text: Option<(String, usize, usize)>) {
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Partial::Sequence { .. }) => {}
            Some(Partial::Mapping { entries, key, .. }) => match key.take() {
                Some((key, line, column)) => entries.push(Entry {
                    key,
                    line,
                    column,
                    value: node,
                }),
                None => match key_text {
                    Some(k) => *key = Some(k),
                    // A key that is itself a mapping or list: never one of ours.
                    None => *key = Some((String::new(), node.line(), 0)),
                },
            },
        }
    }

    /// Where a scalar's text ends, when it is on one line as written.
    fn scalar_span(
        &self,
        start: usize,
        value: &str,
        style: TScalarStyle,
    ) -> Option<(usize, usize)> {
        let rest = self.source.get(start..)?;
        let line_end = rest.find(['\n', '\r']).unwrap_or(rest.len());
        let line = &rest[..line_end];
        let length = match style {
            // An empty value (`key:` alone) is placed at the next token: no span.
            TScalarStyle::Plain if value.is_empty() => return None,
            TScalarStyle::Plain => line.starts_with(value).then_some(value.len())?,
            TScalarStyle::SingleQuoted => {
                let body = line.strip_prefix('\'')?;
                let mut chars = body.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == '\'' {
                        if body[i + 1..].starts_with('\'') {
                            chars.next();
                        } else {
                            end = Some(i + 2);
                            break;
                        }
                    }
                }
                end?
            }
            TScalarStyle::DoubleQuoted => {
                let body = line.strip_prefix('"')?;
                let mut escaped = false;
                let mut end = None;
                for (i, c) in body.char_indices() {
                    match c {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => {
                            end = Some(i + 2);
                            break;
                        }
                        _ => escaped = false,
                    }
                }
                end?
            }
            _ => return None,
        };
        Some((start, start + length))
    }
}

impl MarkedEventReceiver for TreeBuilder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let line = mark.line().saturating_sub(1);
        match event {
            Event::Scalar(value, style, ..) => {
                let start = self.byte(&mark);
                let awaiting_key =
                    matches!(self.stack.last(), Some(Partial::Mapping { key: None, .. }));
                if awaiting_key {
                    self.finish(
                        Node::Scalar { span: None, line },
                        Some((value, line, mark.col())),
                    );
                } else {
                    let span = self.scalar_span(start, &value, style);
                    self.finish(Node::Scalar { span, line }, None);
                }
            }
            Event::Alias(_) => self.finish(Node::Alias { line }, None),
            Event::MappingStart(..) => {
                let start = self.byte(&mark);
                let flow = self.source.get(start..).is_some_and(|s| s.starts_with('{'));
                self.stack.push(Partial::Mapping {
                    flow,
                    line,
                    entries: Vec::new(),
                    key: None,
                });
            }
            Event::SequenceStart(..) => self.stack.push(Partial::Sequence { line }),
            Event::MappingEnd => {
                if let Some(Partial::Mapping {
                    flow,
                    line,
                    entries,
                    ..
                }) = self.stack.pop()
                {
                    let line = entries.first().map_or(line, |e| e.line);
                    self.finish(
                        Node::Mapping {
                            flow,
                            line,
                            entries,
                        },
                        None,
                    );
                }
            }
            Event::SequenceEnd => {
                if let Some(Partial::Sequence { line }) = self.stack.pop() {
                    self.finish(Node::Sequence { line }, None);
                }
            }
            _ => {}
        }
    }
}

impl<'a> Document<'a> {
    fn parse(text: &'a str) -> Result<Self, EditError> {
        let mut builder = TreeBuilder {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            source: text.to_string(),
            ..TreeBuilder::default()
        };
        let mut parser = Parser::new_from_str(text);
        parser
            .load(&mut builder, false)
            .map_err(|e| EditError::Syntax(e.to_string()))?;
        let root = builder
            .root
            .ok_or_else(|| EditError::NotAMapping("(the document)".into()))?;
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        if line_starts.last() != Some(&text.len()) {
            line_starts.push(text.len());
        }
        Ok(Self {
            text,
            line_starts,
            root,
            newline: if text.contains("\r\n") { "\r\n" } else { "\n" }.to_string(),
        })
    }

    fn mapping_at(&self, path: &[&str]) -> Result<&Node, EditError> {
        let mut here = &self.root;
        for (depth, key) in path.iter().enumerate() {
            let Node::Mapping { entries, .. } = here else {
                return Err(EditError::NotAMapping(path[..depth].join(".")));
            };
            here = &entries
                .iter()
                .find(|e| e.key == *key)
                .ok_or_else(|| EditError::NotAMapping(path[..=depth].join(".")))?
                .value;
        }
        match here {
            Node::Mapping { .. } => Ok(here),
            _ => Err(EditError::NotAMapping(path.join("."))),
        }
    }

    /// How far the file indents one level: the step between the two deepest mappings
    /// on `path` (2 when it cannot tell).
    fn indent_unit(&self, path: &[&str]) -> usize {
        let mut columns = Vec::new();
        let mut here = &self.root;
        for key in path {
            let Node::Mapping { entries, .. } = here else {
                break;
            };
            let Some(entry) = entries.iter().find(|e| e.key == *key) else {
                break;
            };
            columns.push(entry.column);
            here = &entry.value;
        }
        columns
            .windows(2)
            .rev()
            .map(|w| w[1].saturating_sub(w[0]))
            .find(|step| *step > 0)
            .unwrap_or(2)
    }

    fn line_text(&self, line: usize) -> &str {
        let start = self
            .line_starts
            .get(line)
            .copied()
            .unwrap_or(self.text.len());
        let end = self
            .line_starts
            .get(line + 1)
            .copied()
            .unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }

    fn line_count(&self) -> usize {
        self.line_starts.len() - 1
    }

    /// Whether a line holds nothing a reader of the mapping would call content.
    fn is_blank_or_comment(&self, line: usize) -> bool {
        let t = self.line_text(line).trim_start();
        t.is_empty() || t.starts_with('#')
    }

    fn indent_of(&self, line: usize) -> usize {
        let t = self.line_text(line);
        t.len() - t.trim_start_matches(' ').len()
    }

    /// The bytes an entry occupies: its key's line through its value's last line
    /// (comments and blank lines after it belong to what follows).
    fn entry_extent(&self, entry: &Entry, shown: &str) -> Result<(usize, usize), EditError> {
        if self.indent_of(entry.line) != entry.column {
            // Something before the key on its line (`- key:`, `{`): not a line of its own.
            return Err(EditError::Unsupported {
                path: shown.to_string(),
                line: entry.line + 1,
                why: "the key does not start its line",
            });
        }
        let mut last = entry.line;
        for line in entry.line + 1..self.line_count() {
            if self.is_blank_or_comment(line) {
                continue;
            }
            let indent = self.indent_of(line);
            // A block list may sit at its key's own column (`key:` then `- item`).
            let rest = &self.line_text(line)[indent..];
            let item = rest == "-" || rest.starts_with("- ");
            if indent < entry.column || (indent == entry.column && !item) {
                break;
            }
            last = line;
        }
        Ok((self.line_starts[entry.line], self.line_starts[last + 1]))
    }

    /// Where new keys of a block mapping go: after its last entry.
    fn append_point(&self, entries: &[Entry], shown: &str) -> Result<(usize, usize), EditError> {
        let last = entries.last().ok_or_else(|| EditError::Unsupported {
            path: shown.to_string(),
            line: 1,
            why: "an empty mapping",
        })?;
        let (_, end) = self.entry_extent(last, shown)?;
        Ok((end, entries[0].column))
    }

    /// Merges `change` into the entry `key` of the block mapping `parent`.
    fn merge_entry(
        &self,
        parent: &Node,
        parent_path: &str,
        key: &str,
        change: &Json,
        unit: usize,
        edits: &mut Edits,
    ) -> Result<(), EditError> {
        let shown = if parent_path.is_empty() {
            key.to_string()
        } else {
            format!("{parent_path}.{key}")
        };
        let Node::Mapping {
            flow,
            line,
            entries,
        } = parent
        else {
            return Err(EditError::NotAMapping(parent_path.to_string()));
        };
        if *flow {
            return Err(EditError::Unsupported {
                path: parent_path.to_string(),
                line: line + 1,
                why: "a flow mapping `{...}`",
            });
        }
        check_key(key)?;
        let existing = entries.iter().find(|e| e.key == key);
        let Some(entry) = existing else {
            if let Some(lines) = render_entry(key, change, 0, unit, &self.newline)? {
                let (at, column) = self.append_point(entries, parent_path)?;
                edits.insert(at, column, indent_lines(&lines, column, &self.newline));
            }
            return Ok(());
        };
        if change.is_null() || self.empties(entry, change) {
            let (start, end) = self.entry_extent(entry, &shown)?;
            edits.replace(start, end, String::new());
            return Ok(());
        }
        match (&entry.value, change) {
            (Node::Alias { line }, _) => Err(EditError::Unsupported {
                path: shown,
                line: line + 1,
                why: "an alias `*name`",
            }),
            (value @ Node::Mapping { flow: false, .. }, Json::Object(changes)) => {
                for (k, v) in changes {
                    self.merge_entry(value, &shown, k, v, unit, edits)?;
                }
                Ok(())
            }
            (
                Node::Scalar {
                    span: Some((s, e)), ..
                },
                value,
            ) if !value.is_object() => {
                edits.replace(*s, *e, render_scalar(value));
                Ok(())
            }
            (value, Json::Object(_)) if matches!(value, Node::Mapping { .. }) => {
                Err(EditError::Unsupported {
                    path: shown,
                    line: value.line() + 1,
                    why: "a flow mapping `{...}`",
                })
            }
            (_, value) => {
                // A scalar that cannot be replaced in place, a list, a null section that
                // becomes a mapping: the entry is written anew where it stood.
                let (start, end) = self.entry_extent(entry, &shown)?;
                let lines = render_entry(key, value, 0, unit, &self.newline)?.unwrap_or_default();
                edits.replace(
                    start,
                    end,
                    indent_lines(&lines, entry.column, &self.newline),
                );
                Ok(())
            }
        }
    }

    /// Whether `change` removes every key of the mapping under `entry` and adds none.
    fn empties(&self, entry: &Entry, change: &Json) -> bool {
        let (Node::Mapping { entries, .. }, Json::Object(changes)) = (&entry.value, change) else {
            return false;
        };
        let adds = changes
            .iter()
            .any(|(k, v)| !v.is_null() && !entries.iter().any(|e| e.key == *k) && has_leaf(v));
        let kept = entries.iter().any(|e| match changes.get(&e.key) {
            None => true,
            Some(Json::Null) => false,
            Some(v) => !self.empties(e, v),
        });
        !adds && !kept
    }
}

/// Whether a new value writes anything (an object of nulls writes nothing).
fn has_leaf(value: &Json) -> bool {
    match value {
        Json::Null => false,
        Json::Object(map) => map.values().any(has_leaf),
        _ => true,
    }
}

fn check_key(key: &str) -> Result<(), EditError> {
    let fine = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        // `null`, `true`, `1`: YAML would read the key as something else.
        && serde_yaml::from_str::<Yaml>(key).ok() == Some(Yaml::String(key.to_string()));
    if fine {
        Ok(())
    } else {
        Err(EditError::Key(key.chars().take(64).collect()))
    }
}

/// `key: value` (or `key:` and its block) at `depth` levels of `unit`, without the
/// mapping's own indentation; None when it writes nothing.
fn render_entry(
    key: &str,
    value: &Json,
    depth: usize,
    unit: usize,
    newline: &str,
) -> Result<Option<String>, EditError> {
    check_key(key)?;
    let pad = " ".repeat(depth * unit);
    Ok(match value {
        Json::Null => None,
        Json::Object(map) => {
            let mut block = String::new();
            for (k, v) in map {
                if let Some(lines) = render_entry(k, v, depth + 1, unit, newline)? {
                    block.push_str(&lines);
                }
            }
            (!block.is_empty()).then(|| format!("{pad}{key}:{newline}{block}"))
        }
        other => Some(format!("{pad}{key}: {}{newline}", render_scalar(other))),
    })
}

fn indent_lines(lines: &str, column: usize, newline: &str) -> String {
    let pad = " ".repeat(column);
    lines
        .split_inclusive(newline)
        .map(|line| format!("{pad}{line}"))
        .collect()
}

/// A value in flow form: plain where YAML reads it back as the same string, JSON
/// (which is YAML) otherwise.
fn render_scalar(value: &Json) -> String {
    match value {
        Json::String(s) => {
            let plain = !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b))
                && s.as_bytes()[0].is_ascii_alphanumeric()
                && serde_yaml::from_str::<Yaml>(s).ok() == Some(Yaml::String(s.clone()));
            if plain { s.clone() } else { double_quoted(s) }
        }
        other => other.to_string(),
    }
}

/// A YAML double-quoted string: JSON's escapes, plus every character YAML would take
/// for a line break or refuses (NEL, the Unicode line and paragraph separators, DEL,
/// the BOM) written as an escape.
fn double_quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Replacements on the original text, applied from the end so offsets stay valid.
/// Insertions at one offset keep the deeper mapping's lines first: a mapping nested
/// in another ends where its parent does.
#[derive(Default)]
struct Edits(Vec<(usize, usize, std::cmp::Reverse<usize>, String)>);

impl Edits {
    fn replace(&mut self, start: usize, end: usize, text: String) {
        self.0.push((start, end, std::cmp::Reverse(0), text));
    }

    fn insert(&mut self, at: usize, column: usize, text: String) {
        self.0.push((at, at, std::cmp::Reverse(column), text));
    }

    /// Err when two edits overlap (which the merge never plans).
    fn apply(mut self, text: &str, newline: &str) -> Result<String, ()> {
        self.0
            .sort_by_key(|(start, end, depth, _)| (*start, *end, *depth));
        for pair in self.0.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(());
            }
        }
        let mut out = text.to_string();
        for (start, end, _, new) in self.0.into_iter().rev() {
            let new = if start == text.len() && !text.is_empty() && !text.ends_with('\n') {
                format!("{newline}{new}")
            } else {
                new
            };
            out.replace_range(start..end, &new);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FILE: &str = "\
# Production edge.
upstreams:
  api:
    endpoints: [\"127.0.0.1:9000\"]   # the API pool
    breaker:
      # Trip early: this service fails fast.
      failure_rate: 0.5     # half
      minimum_requests: 20
      open_duration: 30s
      half_open:
        permitted_requests: 3

    retries:
      attempts: 1
  static:
    endpoints: [\"127.0.0.1:9001\"]
routes:
  - match: { path_prefix: / }
    upstream: api
";

    fn edit(path: &[&str], change: Json) -> Result<String, EditError> {
        merge(FILE, path, &change)
    }

    #[test]
    fn a_changed_scalar_is_replaced_where_it_stands() {
        let out = edit(
            &["upstreams", "api", "breaker"],
            json!({"failure_rate": 0.25, "open_duration": "1m"}),
        )
        .expect("edit");
        assert_eq!(
            out,
            FILE.replace("failure_rate: 0.5", "failure_rate: 0.25")
                .replace("open_duration: 30s", "open_duration: 1m")
        );
    }

    #[test]
    fn a_new_key_goes_at_the_end_of_its_mapping_with_its_indentation() {
        let out = edit(
            &["upstreams", "api", "breaker"],
            json!({"consecutive_failures": 5, "half_open": {"success_threshold": 2}}),
        )
        .expect("edit");
        let expected = FILE.replace(
            "        permitted_requests: 3\n",
            "        permitted_requests: 3\n        success_threshold: 2\n      consecutive_failures: 5\n",
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn a_section_the_file_lacks_is_added_to_its_upstream() {
        let out = edit(
            &["upstreams", "static", "outlier_detection"],
            json!({"consecutive_failures": 3, "base_ejection": "10s"}),
        )
        .expect("edit");
        let expected = FILE.replace(
            "    endpoints: [\"127.0.0.1:9001\"]\n",
            "    endpoints: [\"127.0.0.1:9001\"]\n    outlier_detection:\n      base_ejection: 10s\n      consecutive_failures: 3\n",
        );
        assert_eq!(out, expected);
        let scalar = edit(
            &["upstreams", "static", "max_concurrent_requests"],
            json!(64),
        )
        .expect("edit");
        assert!(scalar.contains("    max_concurrent_requests: 64\nroutes:"));
    }

    #[test]
    fn null_removes_a_key_and_a_mapping_left_empty_goes_with_it() {
        let out = edit(
            &["upstreams", "api", "breaker"],
            json!({"minimum_requests": null}),
        )
        .expect("edit");
        assert_eq!(out, FILE.replace("      minimum_requests: 20\n", ""));
        let out = edit(&["upstreams", "api", "retries"], json!({"attempts": null})).expect("edit");
        assert_eq!(out, FILE.replace("    retries:\n      attempts: 1\n", ""));
        let out = edit(&["upstreams", "api", "breaker"], json!(null)).expect("edit");
        assert!(!out.contains("breaker:") && !out.contains("permitted_requests"));
        assert!(!out.contains("failure_rate") && !out.contains("# Trip early"));
        assert!(out.contains("    retries:\n      attempts: 1\n"), "{out}");
    }

    #[test]
    fn strings_are_quoted_only_when_yaml_would_read_them_otherwise() {
        assert_eq!(render_scalar(&json!("30s")), "30s");
        assert_eq!(render_scalar(&json!("true")), "\"true\"");
        assert_eq!(render_scalar(&json!("1e3")), "\"1e3\"");
        assert_eq!(render_scalar(&json!("a: b")), "\"a: b\"");
        assert_eq!(render_scalar(&json!("")), "\"\"");
        assert_eq!(render_scalar(&json!([500, "5xx"])), "[500,\"5xx\"]");
        assert_eq!(
            render_scalar(&json!("a\u{2028}b\u{85}c\u{7f}\"q\"")),
            "\"a\\u2028b\\u0085c\\u007f\\\"q\\\"\""
        );
    }

    #[test]
    fn what_cannot_be_edited_safely_is_refused_with_where() {
        let flow = "upstreams:\n  api:\n    endpoints: [a:1]\n    breaker: {failure_rate: 0.5}\n";
        let err = merge(
            flow,
            &["upstreams", "api", "breaker"],
            &json!({"failure_rate": 0.2}),
        )
        .expect_err("flow");
        assert!(
            matches!(err, EditError::Unsupported { line: 4, .. }),
            "{err:?}"
        );
        let alias = "x: &b\n  failure_rate: 0.5\nupstreams:\n  api:\n    breaker: *b\n";
        let err = merge(
            alias,
            &["upstreams", "api", "breaker"],
            &json!({"failure_rate": 0.2}),
        )
        .expect_err("alias");
        assert!(
            matches!(err, EditError::Unsupported { line: 5, .. }),
            "{err:?}"
        );
        let err = edit(&["upstreams", "api", "breaker"], json!({"bad key": 1})).expect_err("key");
        assert!(matches!(err, EditError::Key(_)));
        let err = edit(&["upstreams", "nope", "breaker"], json!({"a": 1})).expect_err("missing");
        assert_eq!(err, EditError::NotAMapping("upstreams.nope".into()));
    }

    #[test]
    fn crlf_files_stay_crlf_and_a_missing_final_newline_is_handled() {
        let crlf = "upstreams:\r\n  api:\r\n    breaker:\r\n      failure_rate: 0.5\r\n";
        let out = merge(
            crlf,
            &["upstreams", "api", "breaker"],
            &json!({"minimum_requests": 5}),
        )
        .expect("edit");
        assert_eq!(out, format!("{crlf}      minimum_requests: 5\r\n"));
        let bare = "upstreams:\n  api:\n    breaker:\n      failure_rate: 0.5";
        let out = merge(
            bare,
            &["upstreams", "api", "breaker"],
            &json!({"minimum_requests": 5}),
        )
        .expect("edit");
        assert_eq!(out, format!("{bare}\n      minimum_requests: 5\n"));
    }

    #[test]
    fn an_empty_value_is_given_one() {
        let text = "upstreams:\n  api:\n    max_concurrent_requests:\nroutes: []\n";
        let out = merge(
            text,
            &["upstreams", "api", "max_concurrent_requests"],
            &json!(64),
        )
        .expect("edit");
        assert_eq!(
            out,
            "upstreams:\n  api:\n    max_concurrent_requests: 64\nroutes: []\n"
        );
    }

    #[test]
    fn a_list_at_its_keys_column_belongs_to_its_key() {
        let text = "upstreams:\n  api:\n    breaker:\n      failure_when:\n        statuses:\n        - 500\n        - 503\n      open_duration: 5s\n";
        let at = ["upstreams", "api", "breaker"];
        let out = merge(
            text,
            &at,
            &json!({"failure_when": {"statuses": null, "errors": "all"}}),
        )
        .expect("edit");
        assert_eq!(
            out,
            "upstreams:\n  api:\n    breaker:\n      failure_when:\n        errors: all\n      open_duration: 5s\n"
        );
        let out = merge(text, &at, &json!({"failure_when": {"statuses": [502]}})).expect("edit");
        assert_eq!(
            out,
            "upstreams:\n  api:\n    breaker:\n      failure_when:\n        statuses: [502]\n      open_duration: 5s\n"
        );
    }

    #[test]
    fn non_ascii_text_before_the_change_does_not_shift_it() {
        let text = "x:\n  body: |\n    Le service est momentanément indisponible, réessayez.\n    ñandú — ünïcödé\nupstreams:\n  api:\n    breaker:\n      failure_rate: 0.5 # keep\n";
        let out = merge(
            text,
            &["upstreams", "api", "breaker"],
            &json!({"failure_rate": 0.2}),
        )
        .expect("edit");
        assert_eq!(
            out,
            text.replace("failure_rate: 0.5 # keep", "failure_rate: 0.2 # keep")
        );
    }

    #[test]
    fn keys_yaml_would_read_as_something_else_are_refused() {
        for key in ["null", "true", "1", "~"] {
            let err = edit(&["upstreams", "api", "breaker"], json!({ key: 1 })).expect_err(key);
            assert!(matches!(err, EditError::Key(_)), "{key}: {err:?}");
        }
    }

    #[test]
    fn quoted_scalars_are_replaced_whole() {
        let text = "upstreams:\n  api:\n    breaker:\n      open_duration: \"30s\" # q\n      mode: 'automatic'\n";
        let out = merge(
            text,
            &["upstreams", "api", "breaker"],
            &json!({"open_duration": "1m", "mode": "forced_open"}),
        )
        .expect("edit");
        assert_eq!(
            out,
            "upstreams:\n  api:\n    breaker:\n      open_duration: 1m # q\n      mode: forced_open\n"
        );
    }

    #[test]
    fn the_section_reads_back_as_json() {
        assert_eq!(
            section(FILE, &["upstreams", "api", "retries"]).expect("section"),
            json!({"attempts": 1})
        );
        assert_eq!(
            section(FILE, &["upstreams", "static", "breaker"]).expect("section"),
            Json::Null
        );
    }
}
