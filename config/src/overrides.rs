//! `VATIO_*` environment overrides: turning variable names into key paths
//! and setting their values into the parsed TOML table before it is
//! deserialized, so they are type-checked and validated like the file.

use std::collections::BTreeMap;

use toml::{Table, Value};

use crate::Problem;
use crate::parse::closest;

/// Environment variables read by the binary itself, not settings.
const RESERVED: &[&str] = &["VATIO_LOG", "VATIO_CONFIG"];

/// `VATIO_AGGREGATOR__FLUSH_MAX_DELAY=10s` -> `("aggregator.flush_max_delay", "10s")`.
///
/// Only names starting with `VATIO_` are taken; a double underscore
/// separates levels and names are lower-cased. `VATIO_LOG` and
/// `VATIO_CONFIG` are left to the binary.
pub fn env_overrides(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    env.into_iter()
        .filter(|(name, _)| !RESERVED.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("VATIO_")?;
            Some((
                rest.split("__")
                    .collect::<Vec<_>>()
                    .join(".")
                    .to_lowercase(),
                value,
            ))
        })
        .collect()
}

/// The environment variable that sets a key path.
pub(crate) fn env_name(key: &str) -> String {
    format!("VATIO_{}", key.replace('.', "__").to_uppercase())
}

/// Set each override into `table`. Returns which variable set each key, so
/// problems with those keys can say where the value came from.
pub(crate) fn apply(
    table: &mut Table,
    schema: &Table,
    overrides: &[(String, String)],
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, String> {
    let mut sources = BTreeMap::new();
    for (key, raw) in overrides {
        let name = env_name(key);
        let parts: Vec<&str> = key.split('.').collect();
        let default = parts.iter().try_fold(None::<&Value>, |at, part| {
            let table = match at {
                None => schema,
                Some(v) => v.as_table()?,
            };
            table.get(*part).map(Some)
        });
        let value = match default.flatten() {
            Some(Value::Table(_)) => {
                problems.push(Problem::new(
                    format!("env {name}"),
                    format!("`{key}` is a section, not a setting"),
                ));
                continue;
            }
            Some(default) => typed(raw, default),
            None => {
                problems.push(Problem::new(format!("env {name}"), unknown(key, schema)));
                continue;
            }
        };
        if set(table, &parts, value) {
            sources.insert(key.clone(), name);
        }
    }
    sources
}

/// The raw text as the TOML value it spells, if it spells one of the
/// setting's type; otherwise the text itself (a wrong type is then reported
/// by deserialization, quoting the text).
fn typed(raw: &str, default: &Value) -> Value {
    let parsed = raw.parse::<Value>().ok();
    match (default, parsed) {
        // A string setting takes the text as-is ("123", "nan" and dates
        // would otherwise become numbers), unless it is a quoted TOML string.
        (Value::String(_), Some(Value::String(s))) => Value::String(s),
        (Value::String(_), _) => Value::String(raw.to_owned()),
        (_, Some(value)) => value,
        (_, None) => Value::String(raw.to_owned()),
    }
}

/// Set `value` at the key path, creating sections as needed. A section that
/// the file set to a non-table is left alone: its type error is reported.
fn set(table: &mut Table, parts: &[&str], value: Value) -> bool {
    let Some((last, parents)) = parts.split_last() else {
        return false;
    };
    let mut current = table;
    for part in parents {
        let entry = current
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry.as_table_mut() {
            Some(inner) => current = inner,
            None => return false,
        }
    }
    current.insert((*last).to_owned(), value);
    true
}

fn unknown(key: &str, schema: &Table) -> String {
    let mut leaves = Vec::new();
    collect_leaves(schema, "", &mut leaves);
    let flat = |k: &str| k.replace('.', "_");
    if let Some(known) = leaves.iter().find(|l| flat(l) == flat(key)) {
        return format!(
            "unknown setting `{key}`; levels are separated by a double underscore: {}",
            env_name(known)
        );
    }
    match closest(key, leaves.iter().map(String::as_str)) {
        Some(known) => format!("unknown setting `{key}`, did you mean {}?", env_name(known)),
        None => format!("unknown setting `{key}`"),
    }
}

fn collect_leaves(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = crate::parse::join(prefix, key);
        match value {
            Value::Table(inner) => collect_leaves(inner, &path, out),
            _ => out.push(path),
        }
    }
}
