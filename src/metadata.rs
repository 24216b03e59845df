//! Run metadata: a JSON object per run, changed by Trigger.dev's operations (`set`, `delete`,
//! `append`, `remove`, `increment`, `update`). Keys are top-level names or `$.a.b` paths.

use serde_json::{Map, Value};

/// Largest metadata object, serialized (Trigger.dev's limit).
pub const MAX_METADATA_BYTES: usize = 256 * 1024;

/// One change to a run's metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataOp {
    Set {
        key: String,
        value: Value,
    },
    Delete {
        key: String,
    },
    Append {
        key: String,
        value: Value,
    },
    Remove {
        key: String,
        value: Value,
    },
    Increment {
        key: String,
        by: f64,
    },
    /// Replace the whole object.
    Update {
        value: Map<String, Value>,
    },
}

/// Why a metadata change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata would be {size} bytes; the limit is {MAX_METADATA_BYTES} bytes")]
    TooLarge { size: usize },
    #[error(
        "metadata key `{0}` is invalid: use a name or a `$.a.b` path without `__proto__`, `constructor` or `prototype`"
    )]
    BadKey(String),
    #[error("cannot increment `{0}`: it holds something other than a number")]
    NotANumber(String),
    #[error("stored metadata is not a JSON object")]
    Corrupt,
}

fn path(key: &str) -> Result<Vec<&str>, MetadataError> {
    let parts: Vec<&str> = match key.strip_prefix("$.") {
        Some(rest) => rest.split('.').collect(),
        None => vec![key],
    };
    let forbidden =
        |p: &&str| p.is_empty() || matches!(*p, "__proto__" | "constructor" | "prototype");
    if parts.iter().any(forbidden) {
        return Err(MetadataError::BadKey(key.to_owned()));
    }
    Ok(parts)
}

/// The slot at `key`, creating intermediate objects; `None` if a step is not an object.
fn slot<'a>(root: &'a mut Map<String, Value>, parts: &[&str]) -> Option<&'a mut Value> {
    let (last, parents) = parts.split_last()?;
    let mut map = root;
    for p in parents {
        let next = map
            .entry((*p).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        map = next.as_object_mut()?;
    }
    Some(map.entry((*last).to_owned()).or_insert(Value::Null))
}

/// Applies `ops` to the current metadata text (none: an empty object) and returns the new text.
pub fn apply(current: Option<&str>, ops: &[MetadataOp]) -> Result<String, MetadataError> {
    let mut root: Map<String, Value> = match current {
        None => Map::new(),
        Some(text) => serde_json::from_str(text).map_err(|_| MetadataError::Corrupt)?,
    };
    for op in ops {
        match op {
            MetadataOp::Update { value } => root = value.clone(),
            MetadataOp::Set { key, value } => {
                let parts = path(key)?;
                if let Some(s) = slot(&mut root, &parts) {
                    *s = value.clone();
                }
            }
            MetadataOp::Delete { key } => {
                let parts = path(key)?;
                if let Some((last, parents)) = parts.split_last() {
                    let mut map = Some(&mut root);
                    for p in parents {
                        map = map
                            .and_then(|m| m.get_mut(*p))
                            .and_then(Value::as_object_mut);
                    }
                    if let Some(m) = map {
                        m.remove(*last);
                    }
                }
            }
            MetadataOp::Append { key, value } => {
                let parts = path(key)?;
                if let Some(s) = slot(&mut root, &parts) {
                    match s {
                        Value::Array(items) => items.push(value.clone()),
                        Value::Null => *s = Value::Array(vec![value.clone()]),
                        other => *other = Value::Array(vec![other.take(), value.clone()]),
                    }
                }
            }
            MetadataOp::Remove { key, value } => {
                let parts = path(key)?;
                if let Some(Value::Array(items)) = slot(&mut root, &parts) {
                    items.retain(|v| v != value);
                }
            }
            MetadataOp::Increment { key, by } => {
                let parts = path(key)?;
                if let Some(s) = slot(&mut root, &parts) {
                    let current = match s {
                        Value::Null => 0.0,
                        Value::Number(n) => n.as_f64().unwrap_or(0.0),
                        _ => return Err(MetadataError::NotANumber(key.clone())),
                    };
                    let next = current + by;
                    *s = if next.fract() == 0.0 && next.abs() < 9e15 {
                        Value::from(next as i64)
                    } else {
                        serde_json::Number::from_f64(next).map_or(Value::Null, Value::Number)
                    };
                }
            }
        }
    }
    let text = Value::Object(root).to_string();
    if text.len() > MAX_METADATA_BYTES {
        return Err(MetadataError::TooLarge { size: text.len() });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(current: Option<&str>, ops: Vec<MetadataOp>) -> Value {
        serde_json::from_str(&apply(current, &ops).unwrap()).unwrap()
    }

    #[test]
    fn operations_do_what_trigger_dev_documents() {
        let key = |k: &str| k.to_owned();
        let v = run(
            Some(r#"{"progress":1,"list":[1,2,2,3],"gone":true}"#),
            vec![
                MetadataOp::Increment {
                    key: key("progress"),
                    by: 2.0,
                },
                MetadataOp::Increment {
                    key: key("fresh"),
                    by: -1.0,
                },
                MetadataOp::Remove {
                    key: key("list"),
                    value: json!(2),
                },
                MetadataOp::Append {
                    key: key("list"),
                    value: json!(4),
                },
                MetadataOp::Append {
                    key: key("log"),
                    value: json!("a"),
                },
                MetadataOp::Delete { key: key("gone") },
                MetadataOp::Set {
                    key: key("$.nested.deep"),
                    value: json!("x"),
                },
            ],
        );
        assert_eq!(
            v,
            json!({"progress": 3, "fresh": -1, "list": [1, 3, 4], "log": ["a"], "nested": {"deep": "x"}})
        );
    }

    #[test]
    fn update_replaces_everything() {
        let mut map = Map::new();
        map.insert("only".into(), json!(1));
        assert_eq!(
            run(Some(r#"{"a":1}"#), vec![MetadataOp::Update { value: map }]),
            json!({"only": 1})
        );
    }

    #[test]
    fn limits_and_bad_keys_are_refused() {
        let big = MetadataOp::Set {
            key: "big".into(),
            value: json!("x".repeat(MAX_METADATA_BYTES)),
        };
        assert!(matches!(
            apply(None, &[big]),
            Err(MetadataError::TooLarge { .. })
        ));
        let proto = MetadataOp::Set {
            key: "$.a.__proto__".into(),
            value: json!(1),
        };
        assert!(matches!(
            apply(None, &[proto]),
            Err(MetadataError::BadKey(_))
        ));
        let inc = MetadataOp::Increment {
            key: "s".into(),
            by: 1.0,
        };
        assert!(matches!(
            apply(Some(r#"{"s":"x"}"#), &[inc]),
            Err(MetadataError::NotANumber(_))
        ));
    }
}
