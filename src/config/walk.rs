//! Walking a spanned TOML document by hand, so that every unknown key and every bad value is reported
//! with its position instead of stopping at the first one as serde's derive would.

use super::{Diagnostic, Severity};
use std::ops::Range;
use toml::de::{DeArray, DeTable, DeValue};

pub(crate) type Span = Range<usize>;

/// A 1-based line and column (columns count characters, not bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Collects diagnostics for one file and turns byte offsets into positions.
pub(crate) struct Ctx<'t> {
    text: &'t str,
    file: String,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
    pub(crate) diags: Vec<Diagnostic>,
}

impl<'t> Ctx<'t> {
    pub(crate) fn new(text: &'t str, file: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Ctx {
            text,
            file: file.to_string(),
            line_starts,
            diags: Vec::new(),
        }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        Pos { line, column }
    }

    pub(crate) fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.push(span, Severity::Error, message.into());
    }

    pub(crate) fn warning(&mut self, span: &Span, message: impl Into<String>) {
        self.push(span, Severity::Warning, message.into());
    }

    fn push(&mut self, span: &Span, severity: Severity, message: String) {
        let Pos { line, column } = self.pos(span.start);
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            column,
            severity,
            message,
        });
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    /// Reports every key of `table` not in `allowed`, at the key, with a suggestion when one is close.
    pub(crate) fn check_keys(&mut self, table: &DeTable, what: &str, allowed: &[&str]) {
        for (key, _) in table.iter() {
            let k: &str = key.get_ref();
            if allowed.contains(&k) {
                continue;
            }
            let hint = match closest(k, allowed) {
                Some(near) => format!(" (did you mean `{near}`?)"),
                None => format!(" (allowed: {})", allowed.join(", ")),
            };
            self.error(&key.span(), format!("unknown key `{k}` {what}{hint}"));
        }
    }
}

/// A table's entry by key: the value and its span.
pub(crate) fn get<'a, 'i>(table: &'a DeTable<'i>, key: &str) -> Option<(&'a DeValue<'i>, Span)> {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == key)
        .map(|(_, v)| (v.get_ref(), v.span()))
}

pub(crate) fn type_name(v: &DeValue) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Typed getters: each reports a wrong type at the value and returns None, so the walk goes on.
impl Ctx<'_> {
    pub(crate) fn string(&mut self, t: &DeTable, key: &str) -> Option<(String, Span)> {
        let (v, span) = get(t, key)?;
        match v {
            DeValue::String(s) => Some((s.to_string(), span)),
            other => {
                self.error(
                    &span,
                    format!("`{key}` must be a string, not {}", type_name(other)),
                );
                None
            }
        }
    }

    pub(crate) fn boolean(&mut self, t: &DeTable, key: &str) -> Option<(bool, Span)> {
        let (v, span) = get(t, key)?;
        match v {
            DeValue::Boolean(b) => Some((*b, span)),
            other => {
                self.error(
                    &span,
                    format!("`{key}` must be true or false, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// A non-negative integer within `min..=max`.
    pub(crate) fn integer(&mut self, t: &DeTable, key: &str, min: u64, max: u64) -> Option<u64> {
        let (v, span) = get(t, key)?;
        let DeValue::Integer(i) = v else {
            self.error(
                &span,
                format!("`{key}` must be an integer, not {}", type_name(v)),
            );
            return None;
        };
        match u64::from_str_radix(&i.as_str().replace('_', ""), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(&span, format!("`{key}` must be between {min} and {max}"));
                None
            }
        }
    }

    pub(crate) fn string_list(
        &mut self,
        t: &DeTable,
        key: &str,
    ) -> Option<(Vec<(String, Span)>, Span)> {
        let (v, span) = get(t, key)?;
        let DeValue::Array(items) = v else {
            self.error(
                &span,
                format!("`{key}` must be an array of strings, not {}", type_name(v)),
            );
            return None;
        };
        Some((self.strings_of(items, key), span))
    }

    fn strings_of(&mut self, items: &DeArray, key: &str) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push((s.to_string(), item.span())),
                other => self.error(
                    &item.span(),
                    format!("`{key}` items must be strings, not {}", type_name(other)),
                ),
            }
        }
        out
    }

    pub(crate) fn table<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        key: &str,
    ) -> Option<(&'a DeTable<'i>, Span)> {
        let (v, span) = get(t, key)?;
        match v {
            DeValue::Table(inner) => Some((inner, span)),
            other => {
                self.error(
                    &span,
                    format!("`{key}` must be a table, not {}", type_name(other)),
                );
                None
            }
        }
    }

    /// The tables of an array of tables (`[[targets]]`), each with its header's span.
    pub(crate) fn tables<'a, 'i>(
        &mut self,
        t: &'a DeTable<'i>,
        key: &str,
    ) -> Vec<(&'a DeTable<'i>, Span)> {
        let Some((v, span)) = get(t, key) else {
            return Vec::new();
        };
        let DeValue::Array(items) = v else {
            self.error(
                &span,
                format!(
                    "`{key}` must be written as [[{key}]] tables, not {}",
                    type_name(v)
                ),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::Table(inner) => out.push((inner, item.span())),
                other => self.error(
                    &item.span(),
                    format!("`{key}` entries must be tables, not {}", type_name(other)),
                ),
            }
        }
        out
    }
}

/// The allowed key nearest to `key` by edit distance, if it is a plausible typo.
fn closest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let (d, best) = allowed.iter().map(|a| (edit_distance(key, a), *a)).min()?;
    (d <= 2 || (d <= 4 && key.len() > 8)).then_some(best)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
