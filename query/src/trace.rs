//! Whole traces: every span of one trace id, in tree order.

use std::collections::HashMap;

use datafusion::common::ScalarValue;
use datafusion::prelude::{col, lit};
use meshscope_storage::convert::{StoredSpan, batch_to_spans};

use crate::engine::QueryEngine;
use crate::error::Result;

/// A span of a trace with its depth in the span tree (0 for roots and orphans).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpan {
    /// Distance from the root.
    pub depth: usize,
    /// The span as it was sent, with its resource and scope.
    pub stored: StoredSpan,
}

impl QueryEngine {
    /// Every span of the trace, parents before children and siblings by start time; empty when unknown.
    pub async fn trace(&self, trace_id: &[u8]) -> Result<Vec<TraceSpan>> {
        let frame = self
            .context()
            .table("spans")
            .await?
            .filter(col("trace_id").eq(lit(ScalarValue::Binary(Some(trace_id.to_vec())))))?;
        let result = self.collect(frame).await?;
        let mut spans = Vec::new();
        for batch in &result.batches {
            spans.extend(batch_to_spans(batch)?);
        }
        Ok(tree_order(spans))
    }
}

/// Orders spans depth-first from the roots. A span whose parent is missing is treated as a root, so a
/// partly received trace still shows every span.
pub fn tree_order(mut spans: Vec<StoredSpan>) -> Vec<TraceSpan> {
    spans.sort_by(|a, b| {
        (a.span.start_time_unix_nano, &a.span.span_id)
            .cmp(&(b.span.start_time_unix_nano, &b.span.span_id))
    });
    let index: HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, stored)| (stored.span.span_id.as_slice(), i))
        .collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); spans.len()];
    let mut roots = Vec::new();
    for (i, stored) in spans.iter().enumerate() {
        match index.get(stored.span.parent_span_id.as_slice()) {
            Some(&parent) if parent != i => children[parent].push(i),
            _ => roots.push(i),
        }
    }
    // Iterative depth-first walk: traces can be deep enough to overflow a recursive one.
    let mut order = Vec::with_capacity(spans.len());
    let mut visited = vec![false; spans.len()];
    let mut stack: Vec<(usize, usize)> = roots.iter().rev().map(|&root| (root, 0)).collect();
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut visited[i], true) {
            continue;
        }
        order.push((i, depth));
        stack.extend(children[i].iter().rev().map(|&child| (child, depth + 1)));
    }
    // Spans caught in a parent cycle are never reached from a root; show them anyway.
    order.extend((0..spans.len()).filter(|&i| !visited[i]).map(|i| (i, 0)));
    let mut slots: Vec<Option<StoredSpan>> = spans.into_iter().map(Some).collect();
    order
        .into_iter()
        .filter_map(|(i, depth)| slots[i].take().map(|stored| TraceSpan { depth, stored }))
        .collect()
}

#[cfg(test)]
mod tests {
    use meshscope_proto::trace::Span;

    use super::*;

    fn span(id: u8, parent: Option<u8>, start: u64) -> StoredSpan {
        StoredSpan {
            resource: Default::default(),
            resource_schema_url: String::new(),
            scope: Default::default(),
            scope_schema_url: String::new(),
            span: Span {
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                start_time_unix_nano: start,
                ..Default::default()
            },
        }
    }

    fn shape(order: &[TraceSpan]) -> Vec<(u8, usize)> {
        order
            .iter()
            .map(|s| (s.stored.span.span_id[0], s.depth))
            .collect()
    }

    #[test]
    fn parents_come_before_children_and_siblings_by_start() {
        let spans = vec![
            span(3, Some(1), 30),
            span(2, Some(1), 20),
            span(1, None, 10),
            span(4, Some(2), 25),
        ];
        assert_eq!(
            shape(&tree_order(spans)),
            vec![(1, 0), (2, 1), (4, 2), (3, 1)]
        );
    }

    #[test]
    fn orphans_and_cycles_are_kept() {
        let spans = vec![
            span(5, Some(9), 1),
            span(6, Some(7), 2),
            span(7, Some(6), 3),
        ];
        let order = tree_order(spans);
        assert_eq!(order.len(), 3);
        assert_eq!(order[0].stored.span.span_id[0], 5);
    }
}
