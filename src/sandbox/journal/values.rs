//! Every journaled answer's stored form, under each journal [`Format`]: what a replay gives the
//! guest back instead of asking the host again.
//!
//! [`Format::V2`] writes each value field by field in the canonical encoding of `canon` (an
//! enum's variant as an explicit tag). [`Format::V1`] stored serde's JSON of the Rust types of
//! that time; it is still read (not written), by hand from the JSON shapes those types had, so a
//! changed type cannot change how an old journal reads. Numbers (clock readings, deadlines),
//! metadata reads (JSON text) and HTTP outcomes are stored alike in both formats.
//!
//! Decoding never panics: bytes that do not fit are `None`, which the caller reports as a corrupt
//! journal.

use serde_json::Value as Json;

use super::Format;
use super::canon::{Canon, Reader};
use crate::sandbox::{ChildResult, ChildRun, TokenCreated, TokenState};

/// A journaled answer: how it is stored, and read back from an entry of either format.
pub trait JournalValue: Sized {
    /// The value in the current format.
    fn encode(&self) -> Vec<u8>;
    /// The value stored by an entry of `format`; `None` if the bytes are not one.
    fn decode(format: Format, bytes: &[u8]) -> Option<Self>;
}

/// A journaled number (clock readings, wait deadlines), alike in every format.
pub fn number(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// The number in a journaled value; `None` if it is not one.
pub fn as_number(value: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(value.try_into().ok()?))
}

fn json(bytes: &[u8]) -> Option<Json> {
    serde_json::from_slice(bytes).ok()
}

fn json_str(v: &Json) -> Option<String> {
    v.as_str().map(str::to_owned)
}

/// serde's JSON of a `Result<T, String>`: `{"Ok": t}` or `{"Err": "…"}`.
fn json_result<T>(v: &Json, ok: impl FnOnce(&Json) -> Option<T>) -> Option<Result<T, String>> {
    let object = v.as_object().filter(|o| o.len() == 1)?;
    if let Some(t) = object.get("Ok") {
        return ok(t).map(Ok);
    }
    json_str(object.get("Err")?).map(Err)
}

/// `Ok(t)` as tag 0 and `t`, a refusal as tag 1 and its message.
fn encode_result<T>(
    r: &Result<T, String>,
    ok: impl FnOnce(Canon<Vec<u8>>, &T) -> Canon<Vec<u8>>,
) -> Vec<u8> {
    match r {
        Ok(t) => ok(Canon::value().tag(0), t),
        Err(why) => Canon::value().tag(1).str(why),
    }
    .bytes_out()
}

fn decode_result<'a, T>(
    r: &mut Reader<'a>,
    ok: impl FnOnce(&mut Reader<'a>) -> Option<T>,
) -> Option<Result<T, String>> {
    match r.tag()? {
        0 => ok(r).map(Ok),
        1 => r.string().map(Err),
        _ => None,
    }
}

/// A `create-token` answer: the token, or why the request was refused.
impl JournalValue for Result<TokenCreated, String> {
    fn encode(&self) -> Vec<u8> {
        encode_result(self, |c, t| c.str(&t.id).str(&t.url).bool(t.is_cached))
    }

    fn decode(format: Format, bytes: &[u8]) -> Option<Self> {
        match format {
            // The first format journaled only made tokens: `{"id", "url", "is_cached"}`.
            Format::V1 => {
                let v = json(bytes)?;
                Some(Ok(TokenCreated {
                    id: json_str(v.get("id")?)?,
                    url: json_str(v.get("url")?)?,
                    is_cached: v.get("is_cached")?.as_bool()?,
                }))
            }
            Format::V2 => {
                let mut r = Reader::new(bytes);
                let token = decode_result(&mut r, |r| {
                    Some(TokenCreated {
                        id: r.string()?,
                        url: r.string()?,
                        is_cached: r.bool()?,
                    })
                })?;
                r.end(token)
            }
        }
    }
}

/// How a token the guest waited for ended.
impl JournalValue for TokenState {
    fn encode(&self) -> Vec<u8> {
        match self {
            TokenState::Waiting => Canon::value().tag(0),
            TokenState::Completed(data) => Canon::value().tag(1).str(data),
            TokenState::TimedOut(message) => Canon::value().tag(2).str(message),
            TokenState::NotFound => Canon::value().tag(3),
        }
        .bytes_out()
    }

    fn decode(format: Format, bytes: &[u8]) -> Option<Self> {
        match format {
            // `"Waiting"`, `{"Completed": "…"}`, `{"TimedOut": "…"}`, `"NotFound"`.
            Format::V1 => match json(bytes)? {
                Json::String(s) if s == "Waiting" => Some(TokenState::Waiting),
                Json::String(s) if s == "NotFound" => Some(TokenState::NotFound),
                Json::Object(o) if o.len() == 1 => {
                    if let Some(data) = o.get("Completed") {
                        return json_str(data).map(TokenState::Completed);
                    }
                    json_str(o.get("TimedOut")?).map(TokenState::TimedOut)
                }
                _ => None,
            },
            Format::V2 => {
                let mut r = Reader::new(bytes);
                let state = match r.tag()? {
                    0 => TokenState::Waiting,
                    1 => TokenState::Completed(r.string()?),
                    2 => TokenState::TimedOut(r.string()?),
                    3 => TokenState::NotFound,
                    _ => return None,
                };
                r.end(state)
            }
        }
    }
}

/// A trigger's answer: the child runs, or why the items were refused.
impl JournalValue for Result<Vec<ChildRun>, String> {
    fn encode(&self) -> Vec<u8> {
        encode_result(self, |c, runs| {
            c.list(runs, |c, run| c.str(&run.id).bool(run.is_cached))
        })
    }

    fn decode(format: Format, bytes: &[u8]) -> Option<Self> {
        match format {
            // `{"Ok": [{"id", "is_cached"}…]}` or `{"Err": "…"}`.
            Format::V1 => json_result(&json(bytes)?, |runs| {
                runs.as_array()?
                    .iter()
                    .map(|run| {
                        Some(ChildRun {
                            id: json_str(run.get("id")?)?,
                            is_cached: run.get("is_cached")?.as_bool()?,
                        })
                    })
                    .collect()
            }),
            Format::V2 => {
                let mut r = Reader::new(bytes);
                let runs = decode_result(&mut r, |r| {
                    r.list(|r| {
                        Some(ChildRun {
                            id: r.string()?,
                            is_cached: r.bool()?,
                        })
                    })
                })?;
                r.end(runs)
            }
        }
    }
}

/// How the child runs the guest waited for ended, in order.
impl JournalValue for Vec<ChildResult> {
    fn encode(&self) -> Vec<u8> {
        Canon::value()
            .list(self, |c, result| match result {
                ChildResult::Ok(output) => c.tag(0).str(output),
                ChildResult::Error {
                    name,
                    message,
                    stack,
                } => c.tag(1).str(name).str(message).opt_str(stack.as_deref()),
            })
            .bytes_out()
    }

    fn decode(format: Format, bytes: &[u8]) -> Option<Self> {
        match format {
            // `[{"Ok": "…"} | {"Error": {"name", "message", "stack"}}…]`.
            Format::V1 => json(bytes)?
                .as_array()?
                .iter()
                .map(|result| {
                    let o = result.as_object().filter(|o| o.len() == 1)?;
                    if let Some(output) = o.get("Ok") {
                        return json_str(output).map(ChildResult::Ok);
                    }
                    let e = o.get("Error")?;
                    Some(ChildResult::Error {
                        name: json_str(e.get("name")?)?,
                        message: json_str(e.get("message")?)?,
                        stack: match e.get("stack") {
                            None | Some(Json::Null) => None,
                            Some(s) => Some(json_str(s)?),
                        },
                    })
                })
                .collect(),
            Format::V2 => {
                let mut r = Reader::new(bytes);
                let results = r.list(|r| match r.tag()? {
                    0 => Some(ChildResult::Ok(r.string()?)),
                    1 => Some(ChildResult::Error {
                        name: r.string()?,
                        message: r.string()?,
                        stack: r.opt_string()?,
                    }),
                    _ => None,
                })?;
                r.end(results)
            }
        }
    }
}

/// A metadata change's answer: the new metadata (JSON text), or why it was refused.
impl JournalValue for Result<String, String> {
    fn encode(&self) -> Vec<u8> {
        encode_result(self, |c, text| c.str(text))
    }

    fn decode(format: Format, bytes: &[u8]) -> Option<Self> {
        match format {
            Format::V1 => json_result(&json(bytes)?, json_str),
            Format::V2 => {
                let mut r = Reader::new(bytes);
                let result = decode_result(&mut r, Reader::string)?;
                r.end(result)
            }
        }
    }
}

/// A file time: seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Time {
    pub seconds: u64,
    pub nanoseconds: u32,
}

/// The times a `stat` of a file in the scratch directory answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTimes {
    pub accessed: Option<Time>,
    pub modified: Option<Time>,
    pub changed: Option<Time>,
}

impl JournalValue for FileTimes {
    fn encode(&self) -> Vec<u8> {
        [self.accessed, self.modified, self.changed]
            .iter()
            .fold(Canon::value(), |c, t| match t {
                None => c.tag(0),
                Some(t) => c.tag(1).u64(t.seconds).u32(t.nanoseconds),
            })
            .bytes_out()
    }

    fn decode(format: Format, bytes: &[u8]) -> Option<Self> {
        match format {
            // The first format did not journal file times.
            Format::V1 => None,
            Format::V2 => {
                let mut r = Reader::new(bytes);
                let mut time = || match r.tag()? {
                    0 => Some(None),
                    1 => Some(Some(Time {
                        seconds: r.u64()?,
                        nanoseconds: r.u32()?,
                    })),
                    _ => None,
                };
                let times = FileTimes {
                    accessed: time()?,
                    modified: time()?,
                    changed: time()?,
                };
                r.end(times)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> TokenCreated {
        TokenCreated {
            id: "waitpoint_abc".into(),
            url: "http://h/cb".into(),
            is_cached: false,
        }
    }

    fn round_trip<T: JournalValue + PartialEq + std::fmt::Debug>(value: T) {
        assert_eq!(T::decode(Format::V2, &value.encode()), Some(value));
    }

    #[test]
    fn values_of_the_current_format_are_pinned_and_round_trip() {
        let created: Result<TokenCreated, String> = Ok(token());
        assert_eq!(
            created.encode(),
            [
                &[0, 13, 0, 0, 0][..],
                b"waitpoint_abc",
                &[11, 0, 0, 0],
                b"http://h/cb",
                &[0]
            ]
            .concat()
        );
        let refused: Result<TokenCreated, String> = Err("no".into());
        assert_eq!(refused.encode(), [1, 2, 0, 0, 0, b'n', b'o']);
        assert_eq!(
            TokenState::Completed("{}".into()).encode(),
            [1, 2, 0, 0, 0, b'{', b'}']
        );
        assert_eq!(TokenState::NotFound.encode(), [3]);
        let runs: Result<Vec<ChildRun>, String> = Ok(vec![ChildRun {
            id: "r".into(),
            is_cached: true,
        }]);
        assert_eq!(runs.encode(), [0, 1, 0, 0, 0, 1, 0, 0, 0, b'r', 1]);
        let results = vec![
            ChildResult::Ok("1".into()),
            ChildResult::Error {
                name: "E".into(),
                message: "m".into(),
                stack: None,
            },
        ];
        assert_eq!(
            results.encode(),
            [
                2, 0, 0, 0, 0, 1, 0, 0, 0, b'1', 1, 1, 0, 0, 0, b'E', 1, 0, 0, 0, b'm', 0
            ]
        );
        let changed: Result<String, String> = Ok("{}".into());
        assert_eq!(changed.encode(), [0, 2, 0, 0, 0, b'{', b'}']);
        let times = FileTimes {
            accessed: None,
            modified: Some(Time {
                seconds: 1,
                nanoseconds: 2,
            }),
            changed: None,
        };
        assert_eq!(
            times.encode(),
            [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]
        );
        round_trip(times);

        round_trip(created);
        round_trip(refused);
        for state in [
            TokenState::Waiting,
            TokenState::Completed("x".into()),
            TokenState::TimedOut("late".into()),
            TokenState::NotFound,
        ] {
            round_trip(state);
        }
        round_trip(runs);
        round_trip(Err::<Vec<ChildRun>, String>("no".into()));
        round_trip(results);
        round_trip(changed);
        round_trip(Err::<String, String>("too big".into()));
    }

    /// The JSON the first format stored, as that kiln's serde wrote it.
    #[test]
    fn values_of_the_first_format_read_as_they_were_written() {
        let read = |bytes: &str| bytes.as_bytes().to_vec();
        assert_eq!(
            Result::<TokenCreated, String>::decode(
                Format::V1,
                &read(r#"{"id":"waitpoint_abc","url":"http://h/cb","is_cached":false}"#)
            ),
            Some(Ok(token()))
        );
        for (json, state) in [
            (r#""Waiting""#, TokenState::Waiting),
            (
                r#"{"Completed":"{\"ok\":true}"}"#,
                TokenState::Completed(r#"{"ok":true}"#.into()),
            ),
            (
                r#"{"TimedOut":"late"}"#,
                TokenState::TimedOut("late".into()),
            ),
            (r#""NotFound""#, TokenState::NotFound),
        ] {
            assert_eq!(TokenState::decode(Format::V1, &read(json)), Some(state));
        }
        assert_eq!(
            Result::<Vec<ChildRun>, String>::decode(
                Format::V1,
                &read(r#"{"Ok":[{"id":"run_a","is_cached":true}]}"#)
            ),
            Some(Ok(vec![ChildRun {
                id: "run_a".into(),
                is_cached: true
            }]))
        );
        assert_eq!(
            Result::<Vec<ChildRun>, String>::decode(Format::V1, &read(r#"{"Err":"no"}"#)),
            Some(Err("no".into()))
        );
        assert_eq!(
            Vec::<ChildResult>::decode(
                Format::V1,
                &read(r#"[{"Ok":"1"},{"Error":{"name":"E","message":"m","stack":null}}]"#)
            ),
            Some(vec![
                ChildResult::Ok("1".into()),
                ChildResult::Error {
                    name: "E".into(),
                    message: "m".into(),
                    stack: None
                }
            ])
        );
        assert_eq!(
            Result::<String, String>::decode(Format::V1, &read(r#"{"Ok":"{\"a\":1}"}"#)),
            Some(Ok(r#"{"a":1}"#.into()))
        );
    }

    #[test]
    fn bytes_that_are_no_value_are_refused() {
        assert_eq!(TokenState::decode(Format::V2, &[9]), None);
        assert_eq!(
            TokenState::decode(Format::V2, &[3, 0]),
            None,
            "trailing bytes"
        );
        assert_eq!(
            Vec::<ChildResult>::decode(Format::V2, &[255, 255, 255, 255]),
            None,
            "a count the bytes do not back"
        );
        assert_eq!(TokenState::decode(Format::V1, b"{\"Other\":1}"), None);
        assert_eq!(Result::<String, String>::decode(Format::V1, b"[]"), None);
    }
}
