//! The shipped configuration documents every key: `conf/privacy-milter.toml` sets each key
//! the daemon knows, with its built-in default unless the file says why not, and the man
//! page privacy-milter.toml(5) describes each. A key added to the code and forgotten in
//! either fails here.
use privacy_milter::internals::Settings;
use serde_json::Value;
use std::collections::BTreeMap;

/// Leaf keys (dotted paths) and their values; arrays are leaves.
fn leaves(value: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(v, &path, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

fn root(file: &str) -> String {
    format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn defaults() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    leaves(
        &serde_json::to_value(Settings::default()).unwrap(),
        "",
        &mut out,
    );
    out
}

fn shipped() -> BTreeMap<String, Value> {
    use figment::providers::Format;
    let value: Value = figment::Figment::from(figment::providers::Toml::file(root(
        "conf/privacy-milter.toml",
    )))
    .extract()
    .unwrap();
    let mut out = BTreeMap::new();
    leaves(&value, "", &mut out);
    out
}

#[test]
fn shipped_file_sets_every_key_with_its_default() {
    let (defaults, shipped) = (defaults(), shipped());
    let missing: Vec<&String> = defaults
        .keys()
        .filter(|k| !shipped.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from the shipped file: {missing:?}"
    );
    // Where the shipped file deliberately differs from the built-in default, and why.
    let deliberate = [
        // An example domain to replace, so that classification shows what it does.
        "domains.local",
        // The operator's name and contact: examples to replace (an empty one fails `audit`).
        "policy.name",
        "policy.contact",
        // The raw MTA log kept a day, then only the pseudonymised copy: what the shipped
        // policy says (off by default, as the tracker, which writes it, may not run).
        "mta_logs.copy",
    ];
    let differing: Vec<String> = defaults
        .iter()
        .filter(|(k, v)| !deliberate.contains(&k.as_str()) && shipped.get(*k) != Some(v))
        .map(|(k, v)| format!("{k}: default {v}, shipped {:?}", shipped.get(k)))
        .collect();
    assert!(
        differing.is_empty(),
        "the shipped file differs from the defaults: {differing:#?}"
    );
}

#[test]
fn man_page_describes_every_key() {
    let page = std::fs::read_to_string(root("packaging/privacy-milter.toml.5")).unwrap();
    // groff escapes hyphens and wraps keys in font requests: compare on the bare names.
    let page = page.replace("\\-", "-");
    let undocumented: Vec<String> = defaults()
        .into_keys()
        .filter(|path| {
            let (section, key) = path.rsplit_once('.').unwrap_or(("", path));
            let in_section = if section.is_empty() {
                true
            } else {
                page.contains(&format!(".SH [{section}]"))
                    || page.contains(&format!("{section}.{key}"))
            };
            !(in_section && page.contains(key))
        })
        .collect();
    assert!(
        undocumented.is_empty(),
        "keys privacy-milter.toml(5) does not describe: {undocumented:?}"
    );
}
