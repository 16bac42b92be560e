//! Where a key sits in the YAML text. serde forgets positions once a value
//! is deserialised, so this module walks the text a second time with
//! `yaml_rust2`'s event parser and records, for every key path
//! (`routes[2].to`), the line and column of that key — or, for a sequence
//! element (`listeners[0]`), of the element's first scalar. It also notices
//! keys written twice in one mapping, which serde would silently merge.
//! It never fails: on a syntax error it keeps what it saw before it.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        // yaml_rust2 counts lines from 1 and columns from 0.
        Pos { line: m.line(), column: m.col() + 1 }
    }
}

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index, from 0.
    Index(usize),
}

/// Renders a key path the way problems print it: `routes[2].match.sni`.
pub fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        push(&mut out, segment);
    }
    out
}

fn push(out: &mut String, segment: &Segment) {
    match segment {
        Segment::Key(k) if out.is_empty() => out.push_str(k),
        Segment::Key(k) => {
            out.push('.');
            out.push_str(k);
        }
        Segment::Index(i) => {
            let _ = write!(out, "[{i}]");
        }
    }
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The key path (both occurrences have the same).
    pub path: String,
    /// Where it was first written.
    pub first: Pos,
    /// Where it was written again.
    pub again: Pos,
}

/// An index from key paths to positions in one YAML text.
#[derive(Debug, Default)]
pub struct Locator {
    /// Rendered key path → position of the key (or of the element).
    nodes: BTreeMap<String, Pos>,
    /// Keys written twice, in text order.
    duplicates: Vec<Duplicate>,
}

/// A collection being walked.
enum Frame {
    Map {
        /// Key path of the mapping itself.
        path: String,
        /// The next node is a key (else the value of `key`).
        want_key: bool,
        /// Path of the key whose value comes next; `None` for a key we
        /// cannot name (a complex key).
        key: Option<String>,
        /// Keys written so far, with their positions, to spot duplicates.
        seen: HashMap<String, Pos>,
    },
    Seq {
        /// Key path of the sequence itself.
        path: String,
        /// Index of the next element.
        next: usize,
    },
    /// A complex mapping key: skipped, nested collections counted.
    Skip(usize),
}

impl Locator {
    /// Indexes `text`. Never fails; a syntax error ends the walk early.
    pub fn new(text: &str) -> Locator {
        let mut walk = Walk { loc: Locator::default(), stack: Vec::new(), pending: Vec::new() };
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, marker)) = parser.next_token() {
            match event {
                Event::StreamEnd | Event::DocumentEnd => break,
                Event::StreamStart | Event::DocumentStart | Event::Nothing => {}
                Event::Scalar(value, ..) => walk.leaf(Some(value), marker.into()),
                Event::Alias(_) => walk.leaf(None, marker.into()),
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    walk.open(is_map);
                }
                Event::MappingEnd | Event::SequenceEnd => walk.close(marker.into()),
            }
        }
        walk.loc
    }

    /// The position of exactly this path, if it is written in the text.
    pub fn find(&self, path: &[Segment]) -> Option<Pos> {
        self.nodes.get(&render(path)).copied()
    }

    /// The position of `path` or, when it is not written (an omitted key),
    /// of its nearest written ancestor.
    pub fn locate(&self, path: &str) -> Option<Pos> {
        let mut path = path;
        loop {
            if let Some(pos) = self.nodes.get(path) {
                return Some(*pos);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The deepest path written at or before `pos`: the context of a syntax
    /// error at `pos`.
    pub fn path_before(&self, pos: Pos) -> Option<&str> {
        self.nodes
            .iter()
            .filter(|(_, p)| **p <= pos)
            .max_by_key(|(path, p)| (**p, path.len()))
            .map(|(path, _)| path.as_str())
    }

    /// Keys written twice in one mapping, in text order.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }
}

/// The state of one walk over the events.
struct Walk {
    /// The index being built.
    loc: Locator,
    /// The collections open around the current event, outermost first.
    stack: Vec<Frame>,
    /// Sequence elements whose position is their first scalar, not yet seen.
    pending: Vec<String>,
}

/// What a node starting now is to its parent.
enum Slot {
    /// A value (or element, or the root) at this path.
    Value(String),
    /// A mapping key.
    Key,
    /// Inside something we do not index.
    Skip,
}

impl Walk {
    fn record(&mut self, path: String, pos: Pos) {
        self.loc.nodes.entry(path).or_insert(pos);
    }

    /// Claims the slot for a node starting now.
    fn slot(&mut self) -> Slot {
        match self.stack.last_mut() {
            None => Slot::Value(String::new()),
            Some(Frame::Skip(_)) => Slot::Skip,
            Some(Frame::Map { want_key: true, .. }) => Slot::Key,
            Some(Frame::Map { want_key, key, .. }) => {
                *want_key = true;
                match key.take() {
                    Some(path) => Slot::Value(path),
                    None => Slot::Skip,
                }
            }
            Some(Frame::Seq { path, next }) => {
                let mut element = path.clone();
                push(&mut element, &Segment::Index(*next));
                *next += 1;
                Slot::Value(element)
            }
        }
    }

    fn leaf(&mut self, value: Option<String>, pos: Pos) {
        for path in std::mem::take(&mut self.pending) {
            self.record(path, pos);
        }
        match self.slot() {
            Slot::Value(path) => self.record(path, pos),
            Slot::Skip => {}
            Slot::Key => {
                let Some(Frame::Map { path, want_key, key, seen }) = self.stack.last_mut() else {
                    return;
                };
                *want_key = false;
                let Some(name) = value else { return };
                let mut child = path.clone();
                push(&mut child, &Segment::Key(name.clone()));
                *key = Some(child.clone());
                if name == "<<" {
                    return;
                }
                match seen.get(&name) {
                    Some(first) => {
                        let duplicate = Duplicate { path: child, first: *first, again: pos };
                        self.loc.duplicates.push(duplicate);
                    }
                    None => {
                        seen.insert(name, pos);
                        self.record(child, pos);
                    }
                }
            }
        }
    }

    fn open(&mut self, is_map: bool) {
        let frame = match self.slot() {
            Slot::Value(path) => {
                self.pending.push(path.clone());
                if is_map {
                    Frame::Map { path, want_key: true, key: None, seen: HashMap::new() }
                } else {
                    Frame::Seq { path, next: 0 }
                }
            }
            Slot::Key => {
                if let Some(Frame::Map { want_key, key, .. }) = self.stack.last_mut() {
                    *want_key = false;
                    *key = None;
                }
                Frame::Skip(0)
            }
            Slot::Skip => match self.stack.last_mut() {
                Some(Frame::Skip(depth)) => {
                    *depth += 1;
                    return;
                }
                _ => Frame::Skip(0),
            },
        };
        self.stack.push(frame);
    }

    fn close(&mut self, pos: Pos) {
        if let Some(Frame::Skip(depth)) = self.stack.last_mut()
            && *depth > 0
        {
            *depth -= 1;
            return;
        }
        let path = match self.stack.pop() {
            Some(Frame::Map { path, .. } | Frame::Seq { path, .. }) => path,
            _ => return,
        };
        // An empty collection: no scalar inside to take the position of.
        if let Some(i) = self.pending.iter().position(|p| *p == path) {
            self.pending.remove(i);
            self.record(path, pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
listeners:
  - name: edge
    bind: [127.0.0.1:1, 127.0.0.1:2]
routes:
  - name: a
    to: web
  -   name: b
      match: { sni: \"*.x\", alpn: [h2] }
      to: web
backends:
  web: { servers: [] }
";

    fn at(line: usize, column: usize) -> Option<Pos> {
        Some(Pos { line, column })
    }

    #[test]
    fn finds_keys_and_elements() {
        let loc = Locator::new(TEXT);
        let key = |k: &str| Segment::Key(k.to_owned());
        assert_eq!(loc.find(&[key("routes")]), at(4, 1));
        assert_eq!(loc.find(&[key("routes"), Segment::Index(1), key("to")]), at(9, 7));
        assert_eq!(loc.find(&[key("routes"), Segment::Index(1)]), at(7, 7));
        assert_eq!(loc.locate("routes[1].match.sni"), at(8, 16));
        assert_eq!(loc.locate("routes[1].match.alpn[0]"), at(8, 35));
        assert_eq!(loc.locate("listeners[0].bind[1]"), at(3, 25));
        assert_eq!(loc.locate("backends.web.servers"), at(11, 10));
    }

    #[test]
    fn falls_back_to_the_nearest_written_ancestor() {
        let loc = Locator::new(TEXT);
        assert_eq!(loc.locate("routes[0].hooks"), at(5, 5));
        assert_eq!(loc.locate("backends.web.health.rise"), at(11, 3));
        assert_eq!(loc.locate("nowhere.at.all"), None);
    }

    #[test]
    fn empty_collections_take_their_own_position() {
        let loc = Locator::new("a: []\nb:\n  - {}\n  - x\n");
        assert_eq!(loc.locate("a"), at(1, 1));
        assert_eq!(loc.locate("b[1]"), at(4, 5));
        assert!(loc.locate("b[0]").is_some());
    }

    #[test]
    fn reports_duplicate_keys() {
        let loc = Locator::new("backends:\n  web: {}\n  ssh: {}\n  web: {}\n");
        let want = Duplicate {
            path: "backends.web".into(),
            first: Pos { line: 2, column: 3 },
            again: Pos { line: 4, column: 3 },
        };
        assert_eq!(loc.duplicates(), [want]);
        assert_eq!(loc.locate("backends.web"), at(2, 3));
    }

    #[test]
    fn complex_keys_and_aliases_do_not_derail_the_walk() {
        let loc = Locator::new("? [a, b]\n: 1\nx: &v {y: 1}\nz: *v\nw: 2\n");
        assert_eq!(loc.locate("w"), at(5, 1));
        assert_eq!(loc.locate("x.y"), at(3, 8));
        assert_eq!(loc.locate("z"), at(4, 1));
    }

    #[test]
    fn keeps_what_it_saw_before_a_syntax_error() {
        let loc = Locator::new("a: 1\nb:\n  c: [x\nd: 2\n");
        assert_eq!(loc.locate("a"), at(1, 1));
        assert_eq!(loc.path_before(Pos { line: 3, column: 9 }), Some("b.c"));
    }

    #[test]
    fn renders_paths() {
        let path = [Segment::Key("routes".into()), Segment::Index(2), Segment::Key("to".into())];
        assert_eq!(render(&path), "routes[2].to");
    }
}
