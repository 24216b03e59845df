//! The metadata endpoint's body: Trigger.dev's `metadata` object or its `operations` list, as
//! metadata operations.

use serde_json::Value;

use crate::engine::MetadataChanges;
use crate::metadata::MetadataOp;

/// `PUT /api/v1/runs/{id}/metadata` body (Trigger.dev's `FlushedRunMetadata`): `metadata`
/// replaces the object, then `operations` apply in order.
pub fn parse_metadata_body(
    mut body: serde_json::Map<String, Value>,
) -> Result<MetadataChanges, String> {
    let mut changes = MetadataChanges::default();
    match body.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(value)) => changes.current.push(MetadataOp::Update { value }),
        Some(_) => return Err("`metadata` must be a JSON object".into()),
    }
    for (key, ops) in [
        ("operations", &mut changes.current),
        ("parentOperations", &mut changes.parent),
        ("rootOperations", &mut changes.root),
    ] {
        match body.remove(key) {
            None | Some(Value::Null) => {}
            Some(Value::Array(list)) => {
                for (i, op) in list.into_iter().enumerate() {
                    ops.push(parse_metadata_op(op).map_err(|e| format!("{key}[{i}]: {e}"))?);
                }
            }
            Some(_) => return Err(format!("`{key}` must be an array")),
        }
    }
    if let Some(k) = body.keys().next() {
        return Err(format!(
            "unknown field `{k}`; send `metadata`, `operations`, `parentOperations` and/or `rootOperations`"
        ));
    }
    Ok(changes)
}

pub(crate) fn parse_metadata_op(op: Value) -> Result<MetadataOp, String> {
    let Value::Object(mut op) = op else {
        return Err("each operation must be an object with a `type`".into());
    };
    let kind = op
        .remove("type")
        .and_then(|t| t.as_str().map(str::to_owned))
        .unwrap_or_default();
    let key = || match op.get("key") {
        Some(Value::String(k)) if !k.is_empty() => Ok(k.clone()),
        _ => Err(format!("`{kind}` needs a non-empty string `key`")),
    };
    let value = || {
        op.get("value")
            .cloned()
            .ok_or_else(|| format!("`{kind}` needs a `value`"))
    };
    Ok(match kind.as_str() {
        "set" => MetadataOp::Set {
            key: key()?,
            value: value()?,
        },
        "delete" => MetadataOp::Delete { key: key()? },
        "append" => MetadataOp::Append {
            key: key()?,
            value: value()?,
        },
        "remove" => MetadataOp::Remove {
            key: key()?,
            value: value()?,
        },
        "increment" => MetadataOp::Increment {
            key: key()?,
            by: value()?
                .as_f64()
                .ok_or("`increment` needs a number `value`")?,
        },
        "update" => match value()? {
            Value::Object(value) => MetadataOp::Update { value },
            _ => return Err("`update` needs an object `value`".into()),
        },
        other => {
            return Err(format!(
                "unknown operation type `{other}`; use set, delete, append, remove, increment or update"
            ));
        }
    })
}
