//! Geometry of the server-rendered SVG plots. Templates draw these shapes; every label stays text that
//! askama escapes, so no data ever reaches the SVG as markup.

/// A point of a plot in SVG user units.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Left to right.
    pub x: f64,
    /// Top to bottom.
    pub y: f64,
}

/// A tick on an axis: where, and its label.
#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Position along the axis, user units.
    pub at: f64,
    /// The label.
    pub label: String,
}

/// Maps a value range onto a pixel range.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    from: (f64, f64),
    to: (f64, f64),
}

impl Scale {
    /// `from` onto `to`; an empty `from` range maps everything to the middle of `to`.
    pub fn new(from: (f64, f64), to: (f64, f64)) -> Scale {
        Scale { from, to }
    }

    /// Where `value` lands.
    pub fn at(&self, value: f64) -> f64 {
        let span = self.from.1 - self.from.0;
        if span.abs() < f64::EPSILON {
            return (self.to.0 + self.to.1) / 2.0;
        }
        self.to.0 + (value - self.from.0) / span * (self.to.1 - self.to.0)
    }

    /// `count` evenly spaced ticks over the value range, labelled by `label`.
    pub fn ticks(&self, count: usize, label: impl Fn(f64) -> String) -> Vec<Tick> {
        let steps = count.max(2) - 1;
        (0..=steps)
            .map(|i| {
                let value = self.from.0 + (self.from.1 - self.from.0) * i as f64 / steps as f64;
                Tick {
                    at: self.at(value),
                    label: label(value),
                }
            })
            .collect()
    }
}

/// The `points` attribute of a polyline through `values` (evenly spaced) in a `width`×`height` box.
pub fn polyline(values: &[f64], width: f64, height: f64) -> String {
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let x = Scale::new((0.0, (values.len().max(2) - 1) as f64), (0.0, width));
    let y = Scale::new((0.0, max.max(f64::MIN_POSITIVE)), (height - 1.0, 1.0));
    values
        .iter()
        .enumerate()
        .map(|(i, value)| format!("{:.1},{:.1}", x.at(i as f64), y.at(*value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `points` of a polyline through (x, y) pairs already in data units, scaled by `x` and `y`.
pub fn polyline_xy(points: &[(f64, f64)], x: Scale, y: Scale) -> String {
    points
        .iter()
        .map(|(px, py)| format!("{:.1},{:.1}", x.at(*px), y.at(*py)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One bar of a bar chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub width: f64,
    /// Height.
    pub height: f64,
    /// Label under the bar.
    pub label: String,
    /// Tooltip.
    pub title: String,
}

/// Bars for `(label, title, value)` in a `width`×`height` box, leaving `bottom` units for labels.
pub fn bars(items: &[(String, String, f64)], width: f64, height: f64, bottom: f64) -> Vec<Bar> {
    let max = items.iter().map(|item| item.2).fold(0.0_f64, f64::max);
    let slot = width / items.len().max(1) as f64;
    let y = Scale::new((0.0, max.max(f64::MIN_POSITIVE)), (height - bottom, 4.0));
    items
        .iter()
        .enumerate()
        .map(|(i, (label, title, value))| {
            let top = y.at(*value);
            Bar {
                x: i as f64 * slot + 1.0,
                y: top,
                width: (slot - 2.0).max(1.0),
                height: (height - bottom - top).max(0.0),
                label: label.clone(),
                title: title.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_map_ends_to_ends() {
        let scale = Scale::new((10.0, 20.0), (0.0, 100.0));
        assert_eq!(scale.at(10.0), 0.0);
        assert_eq!(scale.at(20.0), 100.0);
        assert_eq!(Scale::new((5.0, 5.0), (0.0, 10.0)).at(5.0), 5.0);
    }

    #[test]
    fn polylines_span_the_box() {
        assert_eq!(polyline(&[0.0, 2.0], 10.0, 11.0), "0.0,10.0 10.0,1.0");
    }

    #[test]
    fn tallest_bar_fills_the_box() {
        let items = vec![
            ("a".to_owned(), String::new(), 1.0),
            ("b".to_owned(), String::new(), 2.0),
        ];
        let drawn = bars(&items, 100.0, 104.0, 0.0);
        assert_eq!(drawn[1].y, 4.0);
        assert_eq!(drawn[1].height, 100.0);
        assert_eq!(drawn[0].height, 50.0);
    }
}
