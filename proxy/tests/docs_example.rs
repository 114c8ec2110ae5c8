//! The examples in docs/proxy-config.md must stay valid configurations.

const DOC: &str = include_str!("../../docs/proxy-config.md");

#[test]
fn every_toml_example_in_the_docs_is_valid() {
    let mut examples = 0;
    for block in DOC.split("```toml\n").skip(1) {
        let Some((example, _)) = block.split_once("```") else {
            panic!("unterminated toml block in docs/proxy-config.md");
        };
        // Fragments that show one table get the one required table added.
        let example = if example.contains("[service]") {
            example.to_owned()
        } else {
            format!("[service]\nname = \"doc\"\n{example}")
        };
        if let Err(e) = meshscope_proxy::config::parse(&example, "docs/proxy-config.md example") {
            panic!("{e}\n--- example ---\n{example}");
        }
        examples += 1;
    }
    assert!(examples >= 1, "no toml examples found");
}
