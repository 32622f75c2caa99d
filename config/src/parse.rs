//! From TOML text to a [`Config`], collecting every problem on the way:
//! syntax errors with their line and column, unknown keys, and type errors
//! in every section (each section is deserialized on its own, and a bad key
//! is dropped and the section retried, so one mistake does not hide another).
//!
//! The schema is the default configuration serialized to a TOML table: it
//! has every key, and its values show each leaf's TOML type.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::{Table, Value};

use crate::{Config, Problem};

/// The shape of a valid file: every key, with its default value.
pub(crate) fn schema() -> Table {
    // Every field is a string, number, path, address, duration or unit enum,
    // all of which TOML can represent; a unit test covers this.
    Table::try_from(Config::default()).expect("the default configuration serializes to TOML")
}

/// Parse the text as a TOML table, or report every syntax error found.
pub(crate) fn parse_table(text: &str) -> Result<Table, Vec<Problem>> {
    let first = match text.parse::<Table>() {
        Ok(table) => return Ok(table),
        Err(err) => err,
    };
    // Recovering parse: finds the errors after the first one too.
    let (_, mut errors) = toml::de::DeTable::parse_recoverable(text);
    if errors.is_empty() {
        errors.push(first);
    }
    errors.sort_by_key(|e| e.span().map(|s| s.start));
    let mut problems: Vec<Problem> = errors
        .iter()
        .map(|e| {
            let key = match e.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    format!("line {line}, column {column}")
                }
                None => "toml".to_owned(),
            };
            Problem::new(key, e.message().trim())
        })
        .collect();
    problems.dedup();
    Err(problems)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Remove every key of `table` that `schema` does not have, reporting each.
pub(crate) fn remove_unknown_keys(
    table: &mut Table,
    schema: &Table,
    prefix: &str,
    problems: &mut Vec<Problem>,
) {
    let unknown: Vec<String> = table
        .keys()
        .filter(|k| !schema.contains_key(k.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        let message = match closest(&key, schema.keys().map(String::as_str)) {
            Some(known) => format!("unknown key, did you mean `{known}`?"),
            None => "unknown key".to_owned(),
        };
        problems.push(Problem::new(join(prefix, &key), message));
    }
    for (key, value) in table.iter_mut() {
        if let (Value::Table(inner), Some(Value::Table(inner_schema))) = (value, schema.get(key)) {
            remove_unknown_keys(inner, inner_schema, &join(prefix, key), problems);
        }
    }
}

/// Deserialize every section of the table, reporting every type error.
/// A section with errors keeps its good keys and uses defaults for the bad ones.
pub(crate) fn deserialize_sections(mut table: Table, problems: &mut Vec<Problem>) -> Config {
    let t = &mut table;
    let p = &mut *problems;
    Config {
        node: section("node", t, p),
        ingest: section("ingest", t, p),
        log: section("log", t, p),
        cluster: section("cluster", t, p),
        device: section("device", t, p),
        supervision: section("supervision", t, p),
        aggregator: section("aggregator", t, p),
        stream_etl: section("stream_etl", t, p),
        archiver: section("archiver", t, p),
        dead_letters: section("dead_letters", t, p),
        stores: section("stores", t, p),
        tls: section("tls", t, p),
    }
}

fn section<T: DeserializeOwned + Default>(
    name: &str,
    table: &mut Table,
    problems: &mut Vec<Problem>,
) -> T {
    let Some(mut value) = table.remove(name) else {
        return T::default();
    };
    // Each failed attempt removes one key, so this ends.
    loop {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(section) => return section,
            Err(err) => err,
        };
        let mut keys = Vec::new();
        for segment in err.path().iter() {
            match segment {
                Segment::Map { key } => keys.push(key.clone()),
                _ => break,
            }
        }
        let got = lookup(&value, &keys);
        let key = keys.iter().fold(name.to_owned(), |path, k| join(&path, k));
        problems.push(Problem::new(key, describe(err.inner().message(), got)));
        if keys.is_empty() || !remove(&mut value, &keys) {
            return T::default();
        }
    }
}

fn lookup<'a>(value: &'a Value, keys: &[String]) -> Option<&'a Value> {
    keys.iter()
        .try_fold(value, |v, k| v.as_table().and_then(|t| t.get(k)))
}

fn remove(value: &mut Value, keys: &[String]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut current = value;
    for key in parents {
        match current.as_table_mut().and_then(|t| t.get_mut(key)) {
            Some(inner) => current = inner,
            None => return false,
        }
    }
    current
        .as_table_mut()
        .is_some_and(|t| t.remove(last).is_some())
}

/// Turn serde's "invalid type: X, expected Y" into "expected Y, got <value>",
/// and make sure every message quotes the value it is about.
fn describe(message: &str, got: Option<&Value>) -> String {
    let Some(got) = got else {
        return message.to_owned();
    };
    let got_text = render(got);
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some((_, expected)) = message
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once(", expected "))
        {
            return format!("expected {}, got {got_text}", friendly(expected));
        }
    }
    if message == "invalid socket address syntax" {
        return format!("expected {}, got {got_text}", friendly("socket address"));
    }
    let quoted = match got {
        Value::String(s) => message.contains(&format!("`{s}`")),
        _ => false,
    };
    if quoted || message.contains(&got_text) {
        message.to_owned()
    } else {
        format!("{message}, got {got_text}")
    }
}

/// serde's names for expected types, in words an operator knows.
fn friendly(expected: &str) -> String {
    match expected {
        "a duration" => r#"a duration such as "200ms", "5s" or "168h""#.to_owned(),
        "socket address" => r#"an address such as "127.0.0.1:7400""#.to_owned(),
        "u32" => format!("a whole number from 0 to {}", u32::MAX),
        "u64" => "a whole number >= 0".to_owned(),
        "f64" => "a number".to_owned(),
        "path string" => "a path".to_owned(),
        "string only" => "a string".to_owned(),
        s if s.starts_with("struct ") => "a table".to_owned(),
        s => s.to_owned(),
    }
}

/// A value as it would be written in TOML (tables summarized).
pub(crate) fn render(value: &Value) -> String {
    match value {
        Value::Table(_) => "a table".to_owned(),
        v => v.to_string(),
    }
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The candidate nearest to `key`, if it is close enough to be a typo.
pub(crate) fn closest<'a>(key: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(key, c), c))
        .filter(|&(d, c)| {
            let shorter = c.len().min(key.len());
            d < shorter && d <= (shorter / 4).max(2)
        })
        .min()
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(diagonal + 1).min(row[j] + 1);
        }
    }
    row[b.len()]
}
