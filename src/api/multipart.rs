//! `multipart/form-data` bodies (RFC 7578), as a deploy of several components sends them: the
//! boundary from the content type, then each part's headers and bytes. The body is read whole
//! (within the route's limit) before it is split, so parsing never waits on the client; it
//! allocates no more than the parts' names besides the body it was given, and never panics on
//! what a client sends.

use bytes::Bytes;

/// Longest boundary RFC 2046 allows.
const MAX_BOUNDARY_LEN: usize = 70;
/// Bytes of one part's headers: a part has a disposition and a content type, a few hundred bytes.
const MAX_HEADER_BYTES: usize = 8 << 10;
/// Longest file name kept (what messages and the dashboard show of it).
const MAX_FILE_NAME_CHARS: usize = 128;

/// One part of the body.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Part {
    /// The form field's name (`name=` of its `Content-Disposition`), if it has one.
    pub(super) field: Option<String>,
    /// The file name it was sent as, without any directory, if it has one.
    pub(super) file_name: Option<String>,
    pub(super) body: Bytes,
}

/// The boundary of a `multipart/form-data` content type; `None` if the type is another.
/// `Err` says what is wrong with a multipart type that has no usable boundary.
pub(super) fn form_data_boundary(content_type: &str) -> Option<Result<String, String>> {
    let mut params = content_type.split(';');
    let mime = params.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.find_map(|p| {
        let (key, value) = p.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| value.trim().trim_matches('"').to_owned())
    });
    Some(match boundary {
        Some(b) if !b.is_empty() && b.len() <= MAX_BOUNDARY_LEN => Ok(b),
        Some(_) => Err(format!(
            "the multipart boundary must be 1 to {MAX_BOUNDARY_LEN} characters"
        )),
        None => Err("a `multipart/form-data` content type needs a `boundary`".to_owned()),
    })
}

/// Splits `body` into its parts; at most `max_parts` (more is an error saying so).
pub(super) fn parts(body: &Bytes, boundary: &str, max_parts: usize) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let delimiter = delimiter.as_bytes();
    // The first delimiter opens the body (a preamble before it is allowed and ignored).
    let mut at = if body.starts_with(delimiter) {
        0
    } else {
        find(body, next_delimiter.as_bytes(), 0)
            .ok_or("the multipart body has no part: its boundary never appears")?
            + 2
    };
    let mut parts = Vec::new();
    loop {
        at += delimiter.len();
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding, then the line break that ends the delimiter line.
        let padding = rest
            .iter()
            .take_while(|b| **b == b' ' || **b == b'\t')
            .count();
        if !rest[padding..].starts_with(b"\r\n") {
            return Err("a multipart boundary line must end with CRLF".into());
        }
        at += padding + 2;
        let (headers, start) = if body[at..].starts_with(b"\r\n") {
            (&body[at..at], at + 2)
        } else {
            let window = &body[..body.len().min(at + MAX_HEADER_BYTES + 4)];
            let end = find(window, b"\r\n\r\n", at)
                .ok_or("a multipart part's headers are missing, or longer than 8 KiB")?;
            (&body[at..end], end + 4)
        };
        let (field, file_name) = disposition(headers)?;
        let end = find(body, next_delimiter.as_bytes(), start)
            .ok_or("the multipart body ends inside a part; its closing boundary is missing")?;
        if parts.len() == max_parts {
            return Err(format!("the body has more than {max_parts} parts"));
        }
        parts.push(Part {
            field,
            file_name,
            body: body.slice(start..end),
        });
        at = end + 2;
    }
}

/// The field name and file name of a part's `Content-Disposition` header.
fn disposition(headers: &[u8]) -> Result<(Option<String>, Option<String>), String> {
    let text = std::str::from_utf8(headers)
        .map_err(|_| "a multipart part's headers are not UTF-8".to_owned())?;
    let mut found = (None, None);
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "a multipart part's header line has no `:`: {line:.60}"
            ));
        };
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in value.split(';').skip(1) {
            let Some((key, value)) = param.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            match key.trim().to_ascii_lowercase().as_str() {
                "name" => found.0 = Some(value.to_owned()),
                "filename" => found.1 = file_name(value),
                _ => {}
            }
        }
    }
    Ok(found)
}

/// A file name as kept: its last path segment, without control characters, bounded.
fn file_name(sent: &str) -> Option<String> {
    let last = sent.rsplit(['/', '\\']).next().unwrap_or("");
    let name: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILE_NAME_CHARS)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// A `multipart/form-data` body with a `component` part per `(file name, bytes)`: what a deploy
/// of several components sends (`kiln deploy a.wasm b.wasm`), and what [`parts`] reads.
pub fn form_data(
    boundary: &str,
    parts: impl IntoIterator<Item = (Option<String>, Vec<u8>)>,
) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        // A quote or line break would end the header's value early.
        let file = name.map_or(String::new(), |name| {
            let name: String = name
                .chars()
                .map(|c| match c {
                    '"' | '\\' | '\r' | '\n' => '_',
                    c => c,
                })
                .collect();
            format!("; filename=\"{name}\"")
        });
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"component\"{file}\r\nContent-Type: application/wasm\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// Where `needle` first occurs in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let last_start = hay.len().checked_sub(needle.len())?;
    let mut i = from;
    while i <= last_start {
        i += hay[i..=last_start].iter().position(|b| *b == first)?;
        if hay[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[(&str, Option<&str>, &[u8])]) -> Bytes {
        let mut out = b"preamble\r\n".to_vec();
        for (field, file, bytes) in parts {
            out.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"");
            out.extend_from_slice(field.as_bytes());
            out.push(b'"');
            if let Some(file) = file {
                out.extend_from_slice(format!("; filename=\"{file}\"").as_bytes());
            }
            out.extend_from_slice(b"\r\nContent-Type: application/wasm\r\n\r\n");
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"--XyZ--\r\n");
        Bytes::from(out)
    }

    #[test]
    fn parts_come_back_with_their_names_and_exact_bytes() {
        let wasm: &[u8] = b"\0asm\r\n--Xy\r\n\r\nbytes";
        let body = body(&[
            ("component", Some("dir/a.wasm"), wasm),
            ("component", None, b""),
            ("other", Some("C:\\x\\b.wasm"), b"b"),
        ]);
        let parts = parts(&body, "XyZ", 10).expect("parses");
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].file_name.as_deref(), Some("a.wasm"));
        assert_eq!(parts[0].field.as_deref(), Some("component"));
        assert_eq!(&parts[0].body[..], wasm);
        assert_eq!(parts[1].file_name, None);
        assert!(parts[1].body.is_empty());
        assert_eq!(parts[2].file_name.as_deref(), Some("b.wasm"));
    }

    #[test]
    fn broken_bodies_are_errors_never_panics() {
        let good = body(&[("component", Some("a.wasm"), b"abc")]);
        assert!(
            parts(&good, "XyZ", 0)
                .unwrap_err()
                .contains("more than 0 parts")
        );
        for cut in 0..good.len() {
            let _ = parts(&good.slice(..cut), "XyZ", 10);
        }
        for bad in [
            &b""[..],
            b"--XyZ",
            b"--XyZ\r\n",
            b"--XyZ\r\n\r\n",
            b"--XyZ\r\n\r\nabc",
            b"--XyZ\r\nno colon\r\n\r\nabc\r\n--XyZ--",
            b"--XyZ junk",
            b"\r\n--XyZ\r\n\r\n\r\n--XyZ--",
        ] {
            let _ = parts(&Bytes::copy_from_slice(bad), "XyZ", 10);
        }
        let empty_headers = Bytes::from_static(b"--XyZ\r\n\r\nabc\r\n--XyZ--");
        let parsed = parts(&empty_headers, "XyZ", 10).expect("a part without headers");
        assert_eq!(&parsed[0].body[..], b"abc");
        assert_eq!(parsed[0].file_name, None);
    }

    #[test]
    fn what_form_data_writes_parts_reads_back() {
        let sent = vec![
            (Some("a\"b.wasm".to_owned()), b"\0asm one".to_vec()),
            (None, b"two".to_vec()),
        ];
        let body = Bytes::from(form_data("b0und", sent));
        let got = parts(&body, "b0und", 10).expect("parses");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].file_name.as_deref(), Some("a_b.wasm"));
        assert_eq!(&got[0].body[..], b"\0asm one");
        assert_eq!(got[1].file_name, None);
        assert_eq!(&got[1].body[..], b"two");
    }

    #[test]
    fn the_boundary_comes_from_a_form_data_type_only() {
        assert_eq!(form_data_boundary("application/wasm"), None);
        assert_eq!(
            form_data_boundary("multipart/form-data; boundary=\"a b\""),
            Some(Ok("a b".to_owned()))
        );
        assert!(matches!(
            form_data_boundary("Multipart/Form-Data"),
            Some(Err(_))
        ));
        let long = format!("multipart/form-data; boundary={}", "x".repeat(71));
        assert!(matches!(form_data_boundary(&long), Some(Err(_))));
    }
}
