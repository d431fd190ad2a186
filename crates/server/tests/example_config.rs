//! `config.example.yaml` documents every key with its default: it must load and equal the defaults.

#[test]
fn example_config_loads_and_matches_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config.example.yaml");
    let loaded = natter::Config::load(Some(std::path::Path::new(path))).unwrap();
    assert_eq!(
        format!("{loaded:?}"),
        format!("{:?}", natter::Config::default())
    );
}
