//! The service graph page: the window's call graph as a layered SVG drawing, and the same edges as a
//! table. Layers follow the calls (a callee sits right of its callers), which reads well for the
//! mostly tree-shaped graphs of request flows; cycles are broken by ignoring back edges when ranking.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use meshscope_query::QueryEngine;

use crate::format;
use crate::ui::edges::{self, Edge};
use crate::ui::page::{Page, PageResult};
use crate::window::{Window, WindowParam};

const COLUMN_WIDTH: f64 = 380.0;
const ROW_HEIGHT: f64 = 90.0;
const NODE_WIDTH: f64 = 150.0;
const NODE_HEIGHT: f64 = 36.0;
const MARGIN: f64 = 30.0;

/// Characters of a name printed inside a node; the whole name is in the node's tooltip.
const LABEL_CHARS: usize = 22;

/// A node as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Service, database or peer name.
    pub name: String,
    /// The name cut to fit the box.
    pub label: String,
    /// Not an instrumented service.
    pub is_virtual: bool,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
}

/// An edge as drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Caller name.
    pub caller: String,
    /// Callee name.
    pub callee: String,
    /// SVG path.
    pub path: String,
    /// Where the label goes.
    pub label_x: f64,
    /// Where the label goes.
    pub label_y: f64,
    /// Rate, error share, p95.
    pub label: String,
    /// `ok`, `warn` or `bad`.
    pub health: &'static str,
}

/// The graph page.
#[derive(Template)]
#[template(path = "graph.html")]
pub struct GraphPage {
    nav: &'static str,
    window: Window,
    windows: Vec<&'static str>,
    nodes: Vec<Node>,
    lines: Vec<Line>,
    size: (f64, f64),
    node_size: (f64, f64),
}

/// `GET /graph`: the call graph of the window.
pub async fn graph(
    State(engine): State<Arc<QueryEngine>>,
    Query(param): Query<WindowParam>,
) -> PageResult<GraphPage> {
    let window = Window::ending_now(param.window.as_deref());
    let edges = edges::edges(&engine, &window).await?;
    let (nodes, lines, size) = draw(&edges, &window);
    Ok(Page(GraphPage {
        nav: "graph",
        window,
        windows: Window::choices(),
        nodes,
        lines,
        size,
        node_size: (NODE_WIDTH, NODE_HEIGHT),
    }))
}

/// Ranks nodes by longest call chain from a node nobody calls, then places each rank in a column.
fn draw(edges: &[Edge], window: &Window) -> (Vec<Node>, Vec<Line>, (f64, f64)) {
    let mut virtual_nodes = BTreeSet::new();
    let mut names = BTreeSet::new();
    for edge in edges {
        names.insert(edge.caller.as_str());
        names.insert(edge.callee.as_str());
        if edge.virtual_caller {
            virtual_nodes.insert(edge.caller.as_str());
        }
        if edge.virtual_callee {
            virtual_nodes.insert(edge.callee.as_str());
        }
    }
    let mut rank: BTreeMap<&str, usize> = names.iter().map(|name| (*name, 0)).collect();
    // Bellman-Ford style relaxation bounded by the node count: a cycle stops growing ranks then.
    for _ in 0..names.len() {
        let mut changed = false;
        for edge in edges {
            let next = rank[edge.caller.as_str()] + 1;
            if next < names.len() && rank[edge.callee.as_str()] < next {
                rank.insert(edge.callee.as_str(), next);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut columns: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (name, r) in &rank {
        columns.entry(*r).or_default().push(*name);
    }
    let mut nodes = Vec::new();
    let mut position: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (r, members) in &columns {
        for (i, name) in members.iter().enumerate() {
            let (x, y) = (
                MARGIN + *r as f64 * COLUMN_WIDTH,
                MARGIN + i as f64 * ROW_HEIGHT,
            );
            position.insert(*name, (x, y));
            let label = if name.chars().count() > LABEL_CHARS {
                let head: String = name.chars().take(LABEL_CHARS - 1).collect();
                format!("{head}…")
            } else {
                (*name).to_owned()
            };
            nodes.push(Node {
                name: (*name).to_owned(),
                label,
                is_virtual: virtual_nodes.contains(name),
                x,
                y,
            });
        }
    }
    let lines = edges
        .iter()
        .map(|edge| {
            let (cx, cy) = position[edge.caller.as_str()];
            let (tx, ty) = position[edge.callee.as_str()];
            let (x1, y1) = (cx + NODE_WIDTH, cy + NODE_HEIGHT / 2.0);
            let (x2, y2) = (tx, ty + NODE_HEIGHT / 2.0);
            // Forward edges bend gently; backward ones loop below the nodes.
            let path = if x2 > x1 {
                let mid = (x1 + x2) / 2.0;
                format!("M{x1:.1},{y1:.1} C{mid:.1},{y1:.1} {mid:.1},{y2:.1} {x2:.1},{y2:.1}")
            } else {
                let low = cy.max(ty) + NODE_HEIGHT + 30.0;
                format!(
                    "M{:.1},{:.1} C{:.1},{low:.1} {:.1},{low:.1} {:.1},{:.1}",
                    cx + NODE_WIDTH / 2.0,
                    cy + NODE_HEIGHT,
                    cx,
                    tx + NODE_WIDTH,
                    tx + NODE_WIDTH / 2.0,
                    ty + NODE_HEIGHT
                )
            };
            Line {
                caller: edge.caller.clone(),
                callee: edge.callee.clone(),
                path,
                label_x: (x1 + x2) / 2.0,
                label_y: (y1 + y2) / 2.0 - 6.0,
                label: edge.label(window),
                health: format::health(edge.error_share()),
            }
        })
        .collect();
    let width = MARGIN * 2.0 + columns.len().max(1) as f64 * COLUMN_WIDTH;
    let tallest = columns.values().map(Vec::len).max().unwrap_or(1);
    let height = MARGIN * 2.0 + tallest as f64 * ROW_HEIGHT + 40.0;
    (nodes, lines, (width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(caller: &str, callee: &str) -> Edge {
        Edge {
            caller: caller.to_owned(),
            callee: callee.to_owned(),
            virtual_caller: caller == "user",
            virtual_callee: callee == "postgresql",
            calls: 10.0,
            errors: 1.0,
            p95_ns: 1e6,
        }
    }

    #[test]
    fn callees_sit_right_of_callers_and_cycles_terminate() {
        let window = Window::ending_now(Some("5m"));
        let edges = vec![
            edge("user", "front"),
            edge("front", "api"),
            edge("api", "postgresql"),
            edge("api", "front"),
        ];
        let (nodes, lines, _) = draw(&edges, &window);
        let x = |name: &str| nodes.iter().find(|n| n.name == name).unwrap().x;
        assert!(x("user") < x("front"));
        assert!(x("api") < x("postgresql"));
        assert_eq!(lines.len(), 4);
        assert!(
            nodes
                .iter()
                .find(|n| n.name == "postgresql")
                .unwrap()
                .is_virtual
        );
        assert_eq!(lines[0].health, "bad");
    }
}
