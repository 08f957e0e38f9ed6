//! A YAML loader that keeps where every node came from, so each diagnostic can name file,
//! line and column. Built on saphyr-parser's event stream (YAML 1.2); never panics, and
//! bounds alias expansion so a hostile document cannot blow up memory.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Most nodes a file may expand to (aliases included).
const MAX_NODES: usize = 200_000;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 64;

/// A position: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// A YAML node and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub pos: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar, and whether it was written plain (unquoted): only plain scalars are read as
    /// numbers, booleans or null.
    Scalar(String, bool),
    Seq(Vec<Node>),
    /// Key-value pairs in document order (duplicates are reported by the decoder).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A short name of the node's type for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.value {
            Value::Scalar(s, true) if is_null(s) => "null",
            Value::Scalar(s, true) if s == "true" || s == "false" => "a boolean",
            Value::Scalar(s, true) if s.parse::<f64>().is_ok() => "a number",
            Value::Scalar(..) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar(s, true) if is_null(s))
    }
}

fn is_null(s: &str) -> bool {
    matches!(s, "" | "~" | "null" | "Null" | "NULL")
}

/// A syntax error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

fn pos(m: &saphyr_parser::Marker) -> Pos {
    Pos { line: m.line(), col: m.col() + 1 }
}

enum Frame {
    Seq(Vec<Node>, Pos, usize),
    Map(Vec<(Node, Node)>, Option<Node>, Pos, usize),
}

/// Loads every document of `text`.
pub fn load(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut count = 0usize;
    let mut root: Option<Node> = None;
    for item in Parser::new_from_str(text) {
        let (event, span) =
            item.map_err(|e| SyntaxError { pos: pos(e.marker()), message: e.info().to_owned() })?;
        let at = pos(&span.start);
        let node = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => continue,
            Event::DocumentStart(_) => {
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take() {
                    docs.push(r);
                }
                continue;
            }
            Event::Alias(id) => anchors.get(&id).cloned().ok_or_else(|| SyntaxError {
                pos: at,
                message: "alias to an unknown anchor".into(),
            })?,
            Event::Scalar(value, style, anchor, _) => {
                let node = Node {
                    value: Value::Scalar(value.into_owned(), style == ScalarStyle::Plain),
                    pos: at,
                };
                if anchor > 0 {
                    anchors.insert(anchor, node.clone());
                }
                node
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos: at,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                stack.push(Frame::Seq(Vec::new(), at, anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(SyntaxError {
                        pos: at,
                        message: format!("nested deeper than {MAX_DEPTH} levels"),
                    });
                }
                stack.push(Frame::Map(Vec::new(), None, at, anchor));
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq(items, p, anchor)) => {
                    let node = Node { value: Value::Seq(items), pos: p };
                    if anchor > 0 {
                        anchors.insert(anchor, node.clone());
                    }
                    node
                }
                _ => return Err(SyntaxError { pos: at, message: "unbalanced sequence".into() }),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map(pairs, None, p, anchor)) => {
                    let node = Node { value: Value::Map(pairs), pos: p };
                    if anchor > 0 {
                        anchors.insert(anchor, node.clone());
                    }
                    node
                }
                _ => return Err(SyntaxError { pos: at, message: "unbalanced mapping".into() }),
            },
        };
        count += weight(&node);
        if count > MAX_NODES {
            return Err(SyntaxError {
                pos: at,
                message: format!("the document expands to more than {MAX_NODES} nodes"),
            });
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq(items, ..)) => items.push(node),
            Some(Frame::Map(pairs, key, ..)) => match key.take() {
                None => *key = Some(node),
                Some(k) => pairs.push((k, node)),
            },
        }
    }
    if let Some(r) = root {
        docs.push(r);
    }
    Ok(docs)
}

/// How many nodes a (possibly aliased) subtree counts for.
fn weight(node: &Node) -> usize {
    match &node.value {
        Value::Scalar(..) => 1,
        Value::Seq(items) => 1 + items.iter().map(weight).sum::<usize>(),
        Value::Map(pairs) => 1 + pairs.iter().map(|(k, v)| weight(k) + weight(v)).sum::<usize>(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_documents() {
        let docs = load("a: 1\nb:\n  - x\n  - 'y'\n---\nc: ~\n").unwrap();
        assert_eq!(docs.len(), 2);
        let Value::Map(pairs) = &docs[0].value else { panic!("not a map") };
        assert_eq!(pairs[1].0.pos, Pos { line: 2, col: 1 });
        let Value::Seq(items) = &pairs[1].1.value else { panic!("not a seq") };
        assert_eq!(
            items[1],
            Node { value: Value::Scalar("y".into(), false), pos: Pos { line: 4, col: 5 } }
        );
        let Value::Map(pairs) = &docs[1].value else { panic!("not a map") };
        assert!(pairs[0].1.is_null());
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = load("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
        assert!(load("a: *nope\n").is_err());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            doc.push_str(&format!("a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"));
        }
        let err = load(&doc).unwrap_err();
        assert!(err.message.contains("expands to more than"), "{err:?}");
    }
}
