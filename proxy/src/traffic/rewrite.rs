//! Header rewrites configured on a route, for requests and responses.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::HeaderOpsConfig;

/// Compiled header operations, applied as remove, then set, then add.
#[derive(Debug, Default)]
pub(crate) struct HeaderOps {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderOps {
    /// Operations of a validated table (invalid names or values were refused by validation).
    pub(crate) fn from_config(config: &HeaderOpsConfig) -> Self {
        let pairs = |map: &std::collections::BTreeMap<String, String>| {
            map.iter()
                .filter_map(|(name, value)| {
                    Some((
                        HeaderName::from_bytes(name.as_bytes()).ok()?,
                        HeaderValue::from_str(value).ok()?,
                    ))
                })
                .collect()
        };
        Self {
            remove: config
                .remove
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            set: pairs(&config.set),
            add: pairs(&config.add),
        }
    }

    /// Applies the operations to `headers`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_set_add() {
        let config: HeaderOpsConfig = match toml::from_str(
            "remove = [\"x-drop\"]\nset = { x-env = \"prod\" }\nadd = { x-tag = \"b\" }",
        ) {
            Ok(config) => config,
            Err(e) => panic!("{e}"),
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-drop", HeaderValue::from_static("1"));
        headers.insert("x-env", HeaderValue::from_static("dev"));
        headers.insert("x-tag", HeaderValue::from_static("a"));
        HeaderOps::from_config(&config).apply(&mut headers);
        assert!(headers.get("x-drop").is_none());
        assert_eq!(headers["x-env"], "prod");
        let tags: Vec<_> = headers.get_all("x-tag").iter().collect();
        assert_eq!(tags, vec!["a", "b"]);
    }
}
