//! `kiln:task/log`: structured log lines from the guest into the attempt's bounded log buffer.
//!
//! Never fails the guest: attributes that are not a JSON object are kept as a string attribute.

use crate::model::LogLevel;
use crate::sandbox::HostState;
use crate::sandbox::bindings;

impl bindings::kiln::task::log::Host for HostState {
    fn log(
        &mut self,
        level: bindings::kiln::task::log::Level,
        message: String,
        attributes: Option<String>,
    ) {
        use bindings::kiln::task::log::Level as L;
        self.activity.touch();
        let level = match level {
            L::Trace => LogLevel::Trace,
            L::Debug => LogLevel::Debug,
            L::Info => LogLevel::Info,
            L::Warn => LogLevel::Warn,
            L::Error => LogLevel::Error,
        };
        // Attributes that are not a JSON object are kept as a string attribute, not dropped.
        let attributes = attributes.map(|a| match serde_json::from_str::<serde_json::Value>(&a) {
            Ok(v @ serde_json::Value::Object(_)) => v.to_string(),
            _ => serde_json::json!({ "value": a }).to_string(),
        });
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(level, message, attributes);
    }
}
