//! Outbound HTTP through `wasi:http`: `kiln_sdk::http::get(url)` in one line, or a [`Request`]
//! with a method, headers and a body.
//!
//! kiln lets a task reach only the hosts its environment allows; any other request fails with
//! [`HttpError::Denied`] and a line in the run's log saying how to allow it. Responses are
//! journaled: a run that waits and resumes gets the responses it had from the journal instead of
//! sending those requests again. A request whose response was not stored before the host stopped
//! is sent again (at-least-once), so give requests that change something an idempotency key
//! ([`Request::idempotent`]) if the API honours one.

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, Method, OutgoingBody, OutgoingRequest, Scheme};
use wasip2::io::streams::StreamError;

use crate::Context;

/// A whole response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The headers, in order (a name may repeat).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of a header (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The body as text.
    pub fn text(&self) -> Result<&str, HttpError> {
        std::str::from_utf8(&self.body).map_err(|_| HttpError::Body("the body is not UTF-8".into()))
    }

    /// The body as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, HttpError> {
        serde_json::from_slice(&self.body).map_err(|e| HttpError::Body(e.to_string()))
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The environment's allow-list does not include the host, or the attempt used up its
    /// requests (the run's log says which).
    Denied,
    /// The URL is not `http(s)://host[:port][/path][?query]`.
    InvalidUrl(String),
    /// The request failed: no connection, a timeout, a response over the size limit, ….
    Failed(String),
    /// The response body is not what was asked for.
    Body(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied => write!(
                f,
                "the request was denied (see the run's log for how to allow the host)"
            ),
            HttpError::InvalidUrl(why) => write!(f, "invalid URL: {why}"),
            HttpError::Failed(why) => write!(f, "the request failed: {why}"),
            HttpError::Body(why) => write!(f, "unexpected response body: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

fn failed(code: ErrorCode) -> HttpError {
    match code {
        ErrorCode::HttpRequestDenied => HttpError::Denied,
        other => HttpError::Failed(format!("{other:?}")),
    }
}

/// `GET url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Request {
    /// `GET url`.
    pub fn get(url: &str) -> Request {
        Request::new(Method::Get, url)
    }

    /// `POST url`.
    pub fn post(url: &str) -> Request {
        Request::new(Method::Post, url)
    }

    /// `PUT url`.
    pub fn put(url: &str) -> Request {
        Request::new(Method::Put, url)
    }

    /// `DELETE url`.
    pub fn delete(url: &str) -> Request {
        Request::new(Method::Delete, url)
    }

    /// A request with any method.
    pub fn new(method: Method, url: &str) -> Request {
        Request {
            method,
            url: url.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Request {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = Some(body.into());
        self
    }

    /// A JSON body, with its content type.
    pub fn json<T: Serialize>(self, body: &T) -> Request {
        let bytes = serde_json::to_vec(body).unwrap_or_default();
        self.header("content-type", "application/json").body(bytes)
    }

    /// An `Idempotency-Key` the same on every attempt and replay of the run: the run's id and
    /// `label` (one label per distinct operation of the task).
    pub fn idempotent(self, ctx: &Context, label: &str) -> Request {
        let key = format!("{}-{label}", ctx.run_id());
        self.header("idempotency-key", key)
    }

    /// Sends the request and reads the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let fields = Fields::from_list(&self.headers)
            .map_err(|e| HttpError::Failed(format!("bad header: {e:?}")))?;
        let request = OutgoingRequest::new(fields);
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{what} of {}", self.url));
        request
            .set_method(&self.method)
            .map_err(|()| invalid("the method"))?;
        request
            .set_scheme(Some(&scheme))
            .map_err(|()| invalid("the scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("the host"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("the path"))?;
        let body = match &self.body {
            Some(_) => Some(
                request
                    .body()
                    .map_err(|()| HttpError::Failed("the request body was taken".into()))?,
            ),
            None => None,
        };
        let future = outgoing_handler::handle(request, None).map_err(failed)?;
        if let (Some(body), Some(bytes)) = (body, &self.body) {
            {
                let stream = body
                    .write()
                    .map_err(|()| HttpError::Failed("the request body was taken".into()))?;
                for chunk in bytes.chunks(4096) {
                    stream
                        .blocking_write_and_flush(chunk)
                        .map_err(|e| HttpError::Failed(format!("writing the body: {e:?}")))?;
                }
            }
            OutgoingBody::finish(body, None).map_err(failed)?;
        }
        let response = loop {
            match future.get() {
                Some(Ok(Ok(response))) => break response,
                Some(Ok(Err(code))) => return Err(failed(code)),
                Some(Err(())) => return Err(HttpError::Failed("the response was taken".into())),
                None => future.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response.headers().entries();
        let incoming = response
            .consume()
            .map_err(|()| HttpError::Failed("the response body was taken".into()))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| HttpError::Failed("the response body was taken".into()))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(e) => return Err(HttpError::Failed(format!("reading the body: {e:?}"))),
                }
            }
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// `(scheme, authority, path with query)` of an absolute http(s) URL.
fn split_url(url: &str) -> Result<(Scheme, &str, String), HttpError> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(HttpError::InvalidUrl(format!(
            "`{url}` does not start with http:// or https://"
        )));
    };
    let cut = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() {
        return Err(HttpError::InvalidUrl(format!("`{url}` has no host")));
    }
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls_split_into_scheme_host_and_path() {
        let (_, host, path) = split_url("https://api.example.com/v1/items?x=1").unwrap();
        assert_eq!((host, path.as_str()), ("api.example.com", "/v1/items?x=1"));
        let (_, host, path) = split_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((host, path.as_str()), ("127.0.0.1:8080", "/"));
        let (_, host, path) = split_url("http://h?q").unwrap();
        assert_eq!((host, path.as_str()), ("h", "/?q"));
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("https:///path").is_err());
    }
}
