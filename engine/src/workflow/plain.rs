//! Workflows in the plain form, read line by line without the general YAML parser.
//!
//! Large workflows are written by programs and by the editor in a small corner of YAML: block
//! mappings indented with spaces, one-line flow mappings (`{ a: 1, b: x }`), one-line plain,
//! single- and double-quoted scalars, and comments. [`read`] reads exactly that corner, several
//! times faster than the general parser, and gives up on everything else: anchors, tags,
//! sequences, block and multi-line scalars, escapes, tabs, null, keys a
//! workflow does not have, repeated fields, and anything invalid. The general parser then reads
//! the file and reports its problems, so a file means the same whichever reader took it; the tests
//! check that both agree on every document the plain reader accepts.

use super::{Entries, Located, NodeSpec, Position, UiPosition, Workflow};
use serde_json::Value;
use std::borrow::Cow;

/// Reads `text` if it is written in the plain form; `None` when the general parser must read it.
pub(super) fn read(text: &str) -> Option<Workflow> {
    if text.contains(['\t', '\r', '\u{feff}']) {
        return None;
    }
    let mut lines = Lines::new(text);
    let mut workflow = Workflow {
        version: None,
        name: None,
        description: None,
        nodes: Entries::default(),
        ui: None,
    };
    let mut seen = Vec::new();
    while let Some(line) = lines.next_in_block(0)? {
        let mut cursor = Cursor::new(&line);
        let key = cursor.key()?;
        if seen.contains(&key.value) {
            return None;
        }
        match key.value.as_str() {
            "version" => workflow.version = Some(cursor.scalar_to_end()?.into_json()?),
            "name" => workflow.name = Some(cursor.scalar_to_end()?.into_string()?.value),
            "description" => workflow.description = Some(cursor.scalar_to_end()?.into_string()?.value),
            "nodes" => workflow.nodes = read_nodes(&mut lines, cursor)?,
            _ => return None,
        }
        seen.push(key.value);
    }
    seen.iter().any(|key| key == "nodes").then_some(workflow)
}

/// The `nodes:` block: one block of fields under each node id.
fn read_nodes(lines: &mut Lines, mut after_key: Cursor) -> Option<Entries<NodeSpec>> {
    after_key.end()?;
    let indent = lines.block_indent(after_key.line.indent)?;
    let mut nodes = Vec::new();
    while let Some(line) = lines.next_in_block(indent)? {
        let mut cursor = Cursor::new(&line);
        let id = cursor.key()?;
        cursor.end()?;
        nodes.push((id, read_node(lines, indent)?));
    }
    Some(Entries(nodes))
}

/// The fields of one node, in the block under its id line (indented `parent_indent`).
fn read_node(lines: &mut Lines, parent_indent: usize) -> Option<Located<NodeSpec>> {
    let indent = lines.block_indent(parent_indent)?;
    let mut at = Position::Unknown;
    let mut type_name = None;
    let mut title = None;
    let mut inputs = None;
    let mut params = None;
    let mut ui = None;
    let mut enabled = None;
    while let Some(line) = lines.next_in_block(indent)? {
        let mut cursor = Cursor::new(&line);
        let key = cursor.key()?;
        if at == Position::Unknown {
            at = key.at;
        }
        let first = match key.value.as_str() {
            "type" => type_name.replace(cursor.scalar_to_end()?.into_string()?).is_none(),
            "title" => title.replace(cursor.scalar_to_end()?.into_string()?.value).is_none(),
            "inputs" => inputs
                .replace(read_mapping(lines, cursor, |s| s.into_string())?)
                .is_none(),
            "params" => params
                .replace(read_mapping(lines, cursor, |s| s.into_json())?)
                .is_none(),
            "ui" => ui.replace(read_ui(lines, cursor)?).is_none(),
            "enabled" => enabled.replace(cursor.scalar_to_end()?.into_bool()?).is_none(),
            _ => return None,
        };
        if !first {
            return None;
        }
    }
    let spec = NodeSpec {
        type_name: type_name?,
        title,
        inputs: inputs.unwrap_or_default(),
        params: params.unwrap_or_default(),
        ui,
        enabled: enabled.unwrap_or(true),
    };
    Some(Located::new(spec, at))
}

/// `ui:` with exactly `x` and `y`, as a flow mapping or a block (a collapsed node's is read by
/// the general parser).
fn read_ui(lines: &mut Lines, after_key: Cursor) -> Option<UiPosition> {
    let entries = read_mapping(lines, after_key, |s| s.into_f64())?;
    match entries.0.as_slice() {
        [(a, x), (b, y)] if a.value == "x" && b.value == "y" => Some(UiPosition {
            x: x.value,
            y: y.value,
            collapsed: false,
        }),
        [(a, y), (b, x)] if a.value == "y" && b.value == "x" => Some(UiPosition {
            x: x.value,
            y: y.value,
            collapsed: false,
        }),
        _ => None,
    }
}

/// A mapping of scalars after `key:`: a one-line flow mapping on the key's line, or a non-empty
/// block under it. `value` converts each scalar, or gives up.
fn read_mapping<V>(
    lines: &mut Lines,
    mut after_key: Cursor,
    mut value: impl FnMut(Scalar) -> Option<Located<V>>,
) -> Option<Entries<V>> {
    let mut entries = Vec::new();
    after_key.spaces();
    if after_key.eat(b'{') {
        after_key.spaces();
        if !after_key.eat(b'}') {
            loop {
                let key = after_key.key()?;
                after_key.spaces();
                entries.push((key, value(after_key.scalar(Context::Flow)?)?));
                after_key.spaces();
                if after_key.eat(b'}') {
                    break;
                }
                if !after_key.eat(b',') {
                    return None;
                }
                after_key.spaces();
            }
        }
        after_key.end()?;
    } else {
        after_key.end()?;
        let indent = lines.block_indent(after_key.line.indent)?;
        while let Some(line) = lines.next_in_block(indent)? {
            let mut cursor = Cursor::new(&line);
            let key = cursor.key()?;
            entries.push((key, value(cursor.scalar_to_end()?)?));
        }
    }
    Some(Entries(entries))
}

/// One line of the text that holds something: not blank, not only a comment.
struct Line<'a> {
    /// 1-based line number.
    number: u64,
    /// The whole line, without its line break.
    text: &'a str,
    /// Leading spaces.
    indent: usize,
}

/// The text's lines that hold something, with one line of lookahead.
struct Lines<'a> {
    rest: &'a str,
    number: u64,
    peeked: Option<Line<'a>>,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            rest: text,
            number: 0,
            peeked: None,
        }
    }

    /// The next line that holds something, without taking it; `Err` for a comment with
    /// characters YAML does not allow.
    fn peek(&mut self) -> Result<Option<&Line<'a>>, ()> {
        while self.peeked.is_none() && !self.rest.is_empty() {
            let (text, rest) = self.rest.split_once('\n').unwrap_or((self.rest, ""));
            self.rest = rest;
            self.number += 1;
            let body = text.trim_start_matches(' ');
            if body.starts_with('#') {
                if !body.chars().all(printable) {
                    return Err(());
                }
            } else if !body.is_empty() {
                self.peeked = Some(Line {
                    number: self.number,
                    text,
                    indent: text.len() - body.len(),
                });
            }
        }
        Ok(self.peeked.as_ref())
    }

    /// The next line of a block indented `indent`: `Some(None)` where the block ends (a line
    /// indented less, or the end of the text), `None` for a line indented otherwise.
    fn next_in_block(&mut self, indent: usize) -> Option<Option<Line<'a>>> {
        match self.peek().ok()? {
            Some(line) if line.indent == indent => Some(self.peeked.take()),
            Some(line) if line.indent > indent => None,
            _ => Some(None),
        }
    }

    /// The indentation of the block that must follow a key line indented `parent`.
    fn block_indent(&mut self, parent: usize) -> Option<usize> {
        let indent = self.peek().ok()??.indent;
        (indent > parent).then_some(indent)
    }
}

/// Where a scalar stands, which decides the characters that end it.
#[derive(Clone, Copy, PartialEq)]
enum Context {
    /// The value of a block mapping's key: runs to the end of the line or a comment.
    Block,
    /// A value inside `{ }`: also ends at `,` and `}`.
    Flow,
}

/// A reading position within one line.
struct Cursor<'a, 'l> {
    line: &'l Line<'a>,
    at: usize,
    /// Characters before byte `counted.0` of the line, so that columns are counted once per line
    /// however many values it holds.
    counted: (usize, usize),
}

impl<'a, 'l> Cursor<'a, 'l> {
    fn new(line: &'l Line<'a>) -> Self {
        Self {
            line,
            at: line.indent,
            counted: (0, 0),
        }
    }

    fn rest(&self) -> &'a str {
        &self.line.text[self.at..]
    }

    /// The file position of byte `at` of the line; columns count characters.
    fn position(&mut self, at: usize) -> Position {
        let (from, chars) = if at >= self.counted.0 { self.counted } else { (0, 0) };
        let chars = chars + self.line.text[from..at].chars().count();
        self.counted = (at, chars);
        Position::Yaml {
            line: self.line.number,
            column: chars as u64 + 1,
        }
    }

    /// Skips spaces; whether there were any.
    fn spaces(&mut self) -> bool {
        let start = self.at;
        self.at += self.rest().len() - self.rest().trim_start_matches(' ').len();
        self.at > start
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.rest().as_bytes().first() == Some(&byte);
        self.at += usize::from(found);
        found
    }

    /// The end of the line's content: nothing but spaces, or spaces and a comment.
    fn end(&mut self) -> Option<()> {
        let spaced = self.spaces();
        let rest = self.rest();
        (rest.is_empty() || spaced && rest.starts_with('#') && rest.chars().all(printable)).then_some(())
    }

    /// A mapping key, `name:` followed by a space or the end of the line. Keys are plain words
    /// of letters, digits, `_` and `-` that YAML reads as text.
    fn key(&mut self) -> Option<Located<String>> {
        let start = self.at;
        let length = self
            .rest()
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
            .count();
        let word = &self.rest()[..length];
        self.at += length;
        if length > MAX_KEY_BYTES || !matches!(classify(word)?, Plain::Text) || !self.eat(b':') {
            return None;
        }
        if !(self.rest().is_empty() || self.rest().starts_with(' ')) {
            return None;
        }
        Some(Located::new(word.to_string(), self.position(start)))
    }

    /// The value after `key: `, which must end the line.
    fn scalar_to_end(&mut self) -> Option<Scalar<'a>> {
        self.spaces();
        let scalar = self.scalar(Context::Block)?;
        self.end()?;
        Some(scalar)
    }

    /// A one-line scalar in the plain form.
    fn scalar(&mut self, context: Context) -> Option<Scalar<'a>> {
        let at = self.position(self.at);
        let text = match self.rest().as_bytes().first()? {
            b'"' => self.double_quoted()?,
            b'\'' => self.single_quoted()?,
            _ => return Some(Scalar::Plain(self.plain(context)?, at)),
        };
        Some(Scalar::Quoted(text, at))
    }

    /// A plain scalar: a word or words of characters that are never YAML syntax inside one.
    fn plain(&mut self, context: Context) -> Option<&'a str> {
        let rest = self.rest().as_bytes();
        let mut length = 0;
        while let Some(&byte) = rest.get(length) {
            let inside = match byte {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b' ' => true,
                b'_' | b'.' | b'/' | b'-' | b'+' | b'=' | b'(' | b')' | b'~' | b'^' | b';' => true,
                b',' => context == Context::Block,
                b':' => rest.get(length + 1).is_some_and(u8::is_ascii_alphanumeric),
                _ => false,
            };
            if !inside {
                break;
            }
            length += 1;
        }
        let text = self.rest()[..length].trim_end_matches(' ');
        self.at += text.len();
        (!text.is_empty()).then_some(text)
    }

    /// `"text"` without escapes.
    fn double_quoted(&mut self) -> Option<Cow<'a, str>> {
        let body = &self.rest()[1..];
        let length = body.find(['"', '\\'])?;
        let text = &body[..length];
        if body.as_bytes()[length] != b'"' || !text.chars().all(printable) {
            return None;
        }
        self.at += length + 2;
        Some(Cow::Borrowed(text))
    }

    /// `'text'`, where `''` stands for one `'`.
    fn single_quoted(&mut self) -> Option<Cow<'a, str>> {
        let body = &self.rest()[1..];
        let mut text = Cow::Borrowed("");
        let mut from = 0;
        loop {
            let quote = from + body[from..].find('\'')?;
            let piece = &body[from..quote];
            if !piece.chars().all(printable) {
                return None;
            }
            if body.as_bytes().get(quote + 1) == Some(&b'\'') {
                text.to_mut().push_str(piece);
                text.to_mut().push('\'');
                from = quote + 2;
            } else {
                if from == 0 {
                    text = Cow::Borrowed(piece);
                } else {
                    text.to_mut().push_str(piece);
                }
                self.at += quote + 2;
                return Some(text);
            }
        }
    }
}

/// The longest key read here; YAML caps implicit keys, and no workflow key comes near this.
const MAX_KEY_BYTES: usize = 128;

/// A character YAML allows in a scalar or comment, excluding the ones some parsers take as line
/// breaks or a byte-order mark.
fn printable(c: char) -> bool {
    !(c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
}

/// A scalar as written, with its position.
enum Scalar<'a> {
    /// Unquoted: its type depends on how it reads.
    Plain(&'a str, Position),
    /// Quoted: always text.
    Quoted(Cow<'a, str>, Position),
}

impl Scalar<'_> {
    fn into_string(self) -> Option<Located<String>> {
        match self {
            Self::Quoted(text, at) => Some(Located::new(text.into_owned(), at)),
            Self::Plain(text, at) => match classify(text)? {
                Plain::Text => Some(Located::new(text.to_string(), at)),
                _ => None,
            },
        }
    }

    fn into_json(self) -> Option<Located<Value>> {
        match self {
            Self::Quoted(text, at) => Some(Located::new(Value::String(text.into_owned()), at)),
            Self::Plain(text, at) => {
                let value = match classify(text)? {
                    Plain::Text => Value::String(text.to_string()),
                    Plain::Bool(value) => Value::Bool(value),
                    Plain::Integer(value) => Value::from(value),
                    Plain::Float(value) => Value::from(value),
                };
                Some(Located::new(value, at))
            }
        }
    }

    fn into_f64(self) -> Option<Located<f64>> {
        match self {
            Self::Plain(text, at) => match classify(text)? {
                Plain::Integer(value) => Some(Located::new(value as f64, at)),
                Plain::Float(value) => Some(Located::new(value, at)),
                _ => None,
            },
            Self::Quoted(..) => None,
        }
    }

    fn into_bool(self) -> Option<bool> {
        match self {
            Self::Plain(text, _) => match classify(text)? {
                Plain::Bool(value) => Some(value),
                _ => None,
            },
            Self::Quoted(..) => None,
        }
    }
}

/// What a plain scalar reads as, for the spellings read here.
enum Plain {
    Text,
    Bool(bool),
    Integer(i64),
    Float(f64),
}

/// Reads a plain scalar: text starting with a letter, `_` or `/`; `true` and `false`; decimal
/// integers and fractions without exponent or leading zeros, of at most 15 digits. `None` for
/// anything else (null, other spellings of the booleans, other numbers), which the general
/// parser reads. Workflows are read with YAML 1.2 booleans, so `yes`, `no` and `y` are text.
fn classify(text: &str) -> Option<Plain> {
    const WORDS: [&str; 3] = ["null", "true", "false"];
    match text.as_bytes().first()? {
        b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'/' => match text {
            "true" => Some(Plain::Bool(true)),
            "false" => Some(Plain::Bool(false)),
            _ if WORDS.iter().any(|word| word.eq_ignore_ascii_case(text)) => None,
            _ => Some(Plain::Text),
        },
        b'0'..=b'9' | b'-' => {
            let digits = text.strip_prefix('-').unwrap_or(text);
            let (whole, fraction) = match digits.split_once('.') {
                Some((whole, fraction)) => (whole, Some(fraction)),
                None => (digits, None),
            };
            let decimal = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            let well_formed = decimal(whole)
                && (whole == "0" || !whole.starts_with('0'))
                && fraction.is_none_or(decimal)
                && whole.len() + fraction.map_or(0, str::len) <= 15;
            if !well_formed {
                return None;
            }
            match fraction {
                None => text.parse().ok().map(Plain::Integer),
                Some(_) => text.parse().ok().map(Plain::Float),
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
