//! Maps key paths to line:column in the source text, so that errors found after
//! deserialization (dangling references, impossible values) still point at the file.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::error::{KeyPath, Position, Segment};

/// Position of every mapping key and sequence item in a document.
#[derive(Debug, Default)]
pub struct PositionIndex {
    positions: HashMap<KeyPath, Position>,
    /// Keys given twice in one mapping: (path, where repeated, where first given).
    pub duplicates: Vec<(KeyPath, Position, Position)>,
}

enum Frame {
    Mapping {
        path: KeyPath,
        pending_key: Option<String>,
        seen_key: bool,
    },
    Sequence {
        path: KeyPath,
        next: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<KeyPath, Position>,
    duplicates: Vec<(KeyPath, Position, Position)>,
}

fn position(mark: Marker) -> Position {
    // yaml-rust2 columns are 0-based; editors count from 1.
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Builder {
    /// Registers a node starting at `mark` and returns its path (None for a mapping key).
    fn place(&mut self, mark: Marker, key_text: Option<&str>) -> Option<KeyPath> {
        match self.stack.last_mut() {
            None => Some(KeyPath::root()),
            Some(Frame::Mapping {
                path,
                pending_key,
                seen_key,
            }) => match pending_key.take() {
                None => {
                    let key = key_text.unwrap_or_default().to_string();
                    let key_path = path.key(key.clone());
                    let here = position(mark);
                    if !*seen_key && matches!(path.0.last(), Some(Segment::Index(_))) {
                        // A block mapping's start mark lies after its first key; the key
                        // itself is where a reader looks for the mapping.
                        self.positions.insert(path.clone(), here);
                    }
                    *seen_key = true;
                    let inside_duplicate = self
                        .duplicates
                        .iter()
                        .any(|(dup, ..)| key_path.0.starts_with(&dup.0));
                    match self.positions.get(&key_path) {
                        Some(_) if inside_duplicate => {}
                        Some(first) => self.duplicates.push((key_path, here, *first)),
                        None => {
                            self.positions.insert(key_path, here);
                        }
                    }
                    *pending_key = Some(key);
                    None
                }
                Some(key) => Some(path.key(key)),
            },
            Some(Frame::Sequence { path, next }) => {
                let item = path.index(*next);
                *next += 1;
                self.positions.entry(item.clone()).or_insert(position(mark));
                Some(item)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        match event {
            Event::Scalar(text, ..) => {
                self.place(mark, Some(&text));
            }
            Event::Alias(_) => {
                self.place(mark, Some(""));
            }
            Event::MappingStart(..) => {
                // A mapping used as a key has no sensible path; index it under an empty key.
                let path = self.place(mark, Some("")).unwrap_or_default();
                self.stack.push(Frame::Mapping {
                    path,
                    pending_key: None,
                    seen_key: false,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.place(mark, Some("")).unwrap_or_default();
                self.stack.push(Frame::Sequence { path, next: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

impl PositionIndex {
    /// Indexes `text`. A document that does not parse yields an empty index: the
    /// syntax error itself is reported by the deserializer, with its own position.
    pub fn build(text: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut builder, false).is_err() {
            return Self::default();
        }
        Self {
            positions: builder.positions,
            duplicates: builder.duplicates,
        }
    }

    /// The position of `path`, or of its nearest ancestor that is in the document.
    pub fn locate(&self, path: &KeyPath) -> Position {
        let mut segments = path.0.clone();
        loop {
            if let Some(found) = self.positions.get(&KeyPath(segments.clone())) {
                return *found;
            }
            if segments.pop().is_none() {
                return Position { line: 1, column: 1 };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_nested_keys_and_items() {
        let text = "a:\n  b: 1\n  list:\n    - x: 2\n    - y: 3\n";
        let index = PositionIndex::build(text);
        let b = KeyPath::root().key("a").key("b");
        assert_eq!(index.locate(&b), Position { line: 2, column: 3 });
        let y = KeyPath::root().key("a").key("list").index(1).key("y");
        assert_eq!(index.locate(&y), Position { line: 5, column: 7 });
        let missing = KeyPath::root().key("a").key("list").index(1).key("zzz");
        assert_eq!(index.locate(&missing), Position { line: 5, column: 7 });
        assert!(index.duplicates.is_empty());
        let dup = PositionIndex::build("a: 1\nb: 2\na: 3\n");
        assert_eq!(
            dup.duplicates,
            vec![(
                KeyPath::root().key("a"),
                Position { line: 3, column: 1 },
                Position { line: 1, column: 1 }
            )]
        );
    }
}
