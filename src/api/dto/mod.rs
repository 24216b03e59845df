//! Wire shapes, following `@trigger.dev/core`'s `v3/schemas/api.ts` where Trigger.dev has the
//! endpoint. Domain types are converted here; they never serialize themselves. One file per
//! group: trigger requests, metadata operations, runs, deployments and keys.

mod deployments;
mod metadata;
mod runs;
mod trigger;

use std::time::Duration;

use serde_json::value::RawValue;

use crate::model::Millis;

pub use deployments::*;
pub use metadata::*;
pub use runs::*;
pub use trigger::*;

/// A duration in Trigger.dev's string form, e.g. `1h30m`, `45s`.
pub(crate) fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

pub(crate) fn iso(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Stored JSON text, sent as JSON without re-parsing. Stored values were validated on the way in;
/// anything unreadable is sent as a JSON string rather than failing the request.
pub(crate) fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_owned()).unwrap_or_else(|_| {
        RawValue::from_string(serde_json::Value::String(text.to_owned()).to_string())
            .unwrap_or_else(|_| RawValue::from_string("null".into()).unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_like_trigger_dev() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(90_061)), "1d1h1m1s");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
