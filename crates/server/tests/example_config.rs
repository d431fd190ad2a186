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

#[test]
fn production_example_is_valid_once_a_secret_is_given() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config.production.yaml");
    // Without a secret it must refuse: it listens on 0.0.0.0.
    let err = natter::Config::load(Some(std::path::Path::new(path))).unwrap_err();
    assert!(err.to_string().contains("auth.secret"), "{err}");
    let text = std::fs::read_to_string(path).unwrap();
    let config: natter::Config = load_with_secret(&text);
    assert_eq!(config.limits.rate.per_second, 50.0);
}

/// Loads the YAML text the way the server does, with `auth.secret` added.
fn load_with_secret(text: &str) -> natter::Config {
    let dir = std::env::temp_dir().join(format!("natter-prod-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let with_secret = dir.join("with-secret.yaml");
    let text = text.replace(
        "auth:\n",
        "auth:\n  secret: \"example-secret-of-thirty-two-byt\"\n",
    );
    std::fs::write(&with_secret, text).unwrap();
    natter::Config::load(Some(&with_secret)).unwrap()
}
