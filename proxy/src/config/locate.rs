//! Finding the line a configuration value was written on, from its path in the document.
//!
//! Validation works on the typed model, which has no positions; it names each problem by its path
//! (`outbound[0].route[1].split[0].upstream`). This module parses the same text once more into toml's
//! spanned document tree and walks the path to turn it into a line number.

use std::fmt;

use toml::de::{DeTable, DeValue};

/// One step of a path: a table key or an array index.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document, e.g. `upstream[2].endpoints[0].address`.
#[derive(Debug, Clone, Default)]
pub(super) struct ConfigPath(Vec<Step>);

impl ConfigPath {
    /// The path one table key further down.
    pub(super) fn key(&self, key: &str) -> ConfigPath {
        let mut steps = self.0.clone();
        steps.push(Step::Key(key.to_owned()));
        ConfigPath(steps)
    }

    /// The path one array element further down.
    pub(super) fn index(&self, index: usize) -> ConfigPath {
        let mut steps = self.0.clone();
        steps.push(Step::Index(index));
        ConfigPath(steps)
    }
}

impl fmt::Display for ConfigPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => write!(f, "{key}")?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// The 1-based line of the deepest part of `path` present in `source` (a default value that was
/// never written is reported at its table), or `None` if the text does not parse.
pub(super) fn line_of(source: &str, path: &ConfigPath) -> Option<usize> {
    let root = DeTable::parse(source).ok()?;
    let mut offset = root.span().start;
    let mut value: Option<&DeValue<'_>> = None;
    let mut table: Option<&DeTable<'_>> = Some(root.get_ref());
    for step in &path.0 {
        let next = match (step, table, value) {
            (Step::Key(key), Some(table), _) => table
                .iter()
                .find(|(k, _)| k.get_ref() == key)
                .map(|(k, v)| (k.span().start, v)),
            (Step::Index(index), _, Some(DeValue::Array(items))) => {
                items.get(*index).map(|item| (item.span().start, item))
            }
            _ => None,
        };
        let Some((start, spanned)) = next else { break };
        offset = start;
        value = Some(spanned.get_ref());
        table = match spanned.get_ref() {
            DeValue::Table(inner) => Some(inner),
            _ => None,
        };
    }
    Some(line_at(source, offset))
}

/// The 1-based line holding byte `offset`.
pub(super) fn line_at(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The 1-based column of byte `offset` within its line.
pub(super) fn column_at(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    let line_start = source.as_bytes()[..end]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    end - line_start + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_array_of_tables() {
        let text = "[service]\nname = \"a\"\n\n[[upstream]]\nname = \"x\"\n\n[[upstream]]\nname = \"y\"\nendpoints = [\n  { address = \"h:1\" },\n  { address = \"h:2\" },\n]\n";
        let path = ConfigPath::default()
            .key("upstream")
            .index(1)
            .key("endpoints")
            .index(1)
            .key("address");
        assert_eq!(path.to_string(), "upstream[1].endpoints[1].address");
        assert_eq!(line_of(text, &path), Some(11));
        let missing = ConfigPath::default()
            .key("upstream")
            .index(1)
            .key("balancer");
        assert_eq!(line_of(text, &missing), Some(7));
    }
}
