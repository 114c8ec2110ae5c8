//! Annotation templates: `summary` and `description` texts that name the instance's labels and value,
//! rendered with minijinja (Jinja2 syntax: `{{ labels.service }}`, `{{ value | round(1) }}`).
//!
//! Output is plain text (no HTML escaping here): receivers get it as JSON strings and the UI escapes it
//! when it shows it.

use std::collections::BTreeMap;

use minijinja::Environment;

/// Parses `source` without rendering it, so a broken template is refused when the rule is saved.
pub fn check(source: &str) -> Result<(), String> {
    let env = Environment::new();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|error| error.to_string())
}

/// Renders `source` for one instance; a template that fails at render time (e.g. a filter applied to
/// the wrong type) yields its error text, so the alert still goes out and the mistake is visible.
pub fn render(source: &str, labels: &BTreeMap<String, String>, value: f64) -> String {
    let env = Environment::new();
    env.render_str(
        source,
        minijinja::context! { labels => labels, value => value },
    )
    .unwrap_or_else(|error| format!("template error: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::from([("service".to_owned(), "payments".to_owned())])
    }

    #[test]
    fn labels_and_value_are_filled_in() {
        let text = render(
            "{{ labels.service }} fails {{ value | round(1) }}% of calls",
            &labels(),
            33.333,
        );
        assert_eq!(text, "payments fails 33.3% of calls");
        assert_eq!(render("{{ labels.absent }}!", &labels(), 1.0), "!");
    }

    #[test]
    fn broken_templates_are_refused_or_reported() {
        assert!(check("{{ labels.service").is_err());
        assert!(check("{% if %}").is_err());
        assert!(check("{{ value }} ok").is_ok());
        let rendered = render("{{ value | no_such_filter }}", &labels(), 1.0);
        assert!(rendered.starts_with("template error"), "{rendered}");
    }

    #[test]
    fn output_is_not_html_escaped() {
        let labels = BTreeMap::from([("route".to_owned(), "<a&b>".to_owned())]);
        assert_eq!(render("{{ labels.route }}", &labels, 0.0), "<a&b>");
    }
}
