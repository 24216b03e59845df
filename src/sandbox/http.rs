//! Outbound HTTP for guests (`wasi:http/outgoing-handler`): the environment's allow-list, the
//! attempt's limits, and the journal, which answers a replayed request without sending it again.
//!
//! Every request passes [`KilnHttpHooks::send_request`]. A request the allow-list does not name,
//! one to a private or loopback address that no rule names exactly, or one past the attempt's
//! request budget gets `HTTP-request-denied` and a line in the run's log saying how to allow it.
//! An allowed request is sent; its response is read whole (up to the size limit, within the time
//! limit) and its outcome — the response or the error — is journaled under the request's number
//! before the guest sees it. On replay the journal answers and nothing is sent; a request whose
//! outcome was not stored before the host stopped is sent again (at-least-once).

use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::journal::{Call, Format, Journal, calls};
use super::output::LogBuffer;
use super::services::RunServices;
use crate::model::LogLevel;

/// One entry of an allow-list: `scheme://host[:port]`. The scheme is `http`, `https` or `*`; the
/// host is a name, an IP address, `*.` and a domain (its subdomains), or `*`; the port is a
/// number or `*`, and defaults to the scheme's (80, 443).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundRule {
    scheme: Option<String>,
    host: HostPattern,
    port: PortRule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any subdomain (stored as `.example.com`).
    Subdomains(String),
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortRule {
    SchemeDefault,
    Any,
    Exact(u16),
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl OutboundRule {
    pub fn parse(text: &str) -> Result<OutboundRule, String> {
        let bad = |why: &str| {
            format!(
                "`{text}` is not an outbound host rule ({why}); write scheme://host[:port], e.g. https://api.example.com, https://*.example.com, http://localhost:8080 or *://example.com:*"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme {
            "http" | "https" => Some(scheme.to_owned()),
            "*" => None,
            _ => return Err(bad("the scheme must be http, https or *")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(bad("only a scheme, a host and a port"));
        }
        // An IPv6 literal keeps its brackets in the host.
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h, Some(p)),
            _ => (rest, None),
        };
        let port = match port {
            None => PortRule::SchemeDefault,
            Some("*") => PortRule::Any,
            Some(p) => PortRule::Exact(
                p.parse()
                    .map_err(|_| bad("the port must be a number or *"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        let host = if host == "*" {
            HostPattern::Any
        } else if let Some(domain) = host.strip_prefix("*.") {
            if domain.is_empty() || domain.contains('*') {
                return Err(bad("a wildcard host is *.domain"));
            }
            HostPattern::Subdomains(format!(".{domain}"))
        } else if host.is_empty() || host.contains('*') {
            return Err(bad("the host is empty or has a * inside"));
        } else {
            HostPattern::Exact(
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
            )
        };
        Ok(OutboundRule { scheme, host, port })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        let scheme_ok = self.scheme.as_deref().is_none_or(|s| s == scheme);
        let host_ok = match &self.host {
            HostPattern::Exact(h) => h == host,
            HostPattern::Subdomains(suffix) => host.ends_with(suffix.as_str()),
            HostPattern::Any => true,
        };
        let port_ok = match self.port {
            PortRule::SchemeDefault => port == default_port(scheme),
            PortRule::Any => true,
            PortRule::Exact(p) => p == port,
        };
        scheme_ok && host_ok && port_ok
    }

    /// Names its host exactly: then the host may be a private or loopback address.
    fn is_exact(&self) -> bool {
        matches!(self.host, HostPattern::Exact(_))
    }
}

/// Checks every entry of an allow-list.
pub fn parse_allow_list(entries: &[String]) -> Result<Vec<OutboundRule>, String> {
    entries.iter().map(|e| OutboundRule::parse(e)).collect()
}

/// Whether an address is one a task may reach only when a rule names its host exactly:
/// loopback, private (RFC 1918, unique local), link-local, shared (100.64/10), unspecified,
/// multicast or broadcast.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// What one attempt may do over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpLimits {
    /// Requests one attempt may send (replayed ones count).
    pub max_requests: u32,
    /// Largest response body.
    pub max_response_bytes: usize,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest time from sending a request to having its whole response.
    pub total_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> HttpLimits {
        HttpLimits {
            max_requests: 100,
            max_response_bytes: 8 << 20,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(60),
        }
    }
}

/// An attempt's HTTP policy: its environment's allow-list (empty: nothing allowed) and limits.
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    pub allow: Vec<OutboundRule>,
    pub limits: HttpLimits,
    /// How an operator allows a host, for the denial's log line.
    pub how_to_allow: String,
}

/// The store's hooks into wasi:http.
pub(super) struct KilnHttpHooks {
    policy: Arc<HttpPolicy>,
    /// Requests made so far in this execution (the next one's number).
    sent: u32,
    journal: Arc<Mutex<Journal>>,
    logs: Arc<Mutex<LogBuffer>>,
    /// The run's services: a request leaves only once the attempt's start is durable.
    services: Option<Arc<dyn RunServices>>,
}

impl KilnHttpHooks {
    pub(super) fn new(
        policy: Arc<HttpPolicy>,
        journal: Arc<Mutex<Journal>>,
        logs: Arc<Mutex<LogBuffer>>,
        services: Option<Arc<dyn RunServices>>,
    ) -> KilnHttpHooks {
        KilnHttpHooks {
            policy,
            sent: 0,
            journal,
            logs,
            services,
        }
    }
}

type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

fn ready(outcome: Result<http::Response<WasiBody>, Error>) -> SendFuture {
    Box::new(async move { outcome.map(|r| (r, no_io())) })
}

fn no_io() -> IoFuture {
    Box::new(async { Ok(()) })
}

fn log(logs: &Mutex<LogBuffer>, level: LogLevel, message: String) {
    logs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(level, message, None);
}

/// A whole response, as journaled and as handed to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Buffered {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Bytes,
}

impl Buffered {
    fn into_response(self) -> Result<http::Response<WasiBody>, Error> {
        let mut builder = http::Response::builder().status(self.status);
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_slice());
        }
        builder
            .body(
                Full::new(self.body)
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| Error::InternalError(Some(e.to_string())))
    }
}

/// Journal encoding of an outcome: `0`, status, headers, body — or `1` and the error's text.
fn encode_outcome(outcome: &Result<Buffered, Error>) -> Vec<u8> {
    let mut out = Vec::new();
    let put = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    };
    match outcome {
        Ok(r) => {
            out.push(0);
            out.extend_from_slice(&r.status.to_le_bytes());
            out.extend_from_slice(&(r.headers.len() as u32).to_le_bytes());
            for (name, value) in &r.headers {
                put(&mut out, name.as_bytes());
                put(&mut out, value);
            }
            put(&mut out, &r.body);
        }
        Err(e) => {
            out.push(1);
            put(&mut out, error_code(e).as_bytes());
        }
    }
    out
}

fn decode_outcome(bytes: &[u8]) -> Option<Result<Buffered, Error>> {
    struct Reader<'a>(&'a [u8]);
    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = tail;
            Some(head)
        }
        fn u32(&mut self) -> Option<u32> {
            Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
        }
        fn bytes(&mut self) -> Option<&'a [u8]> {
            let n = self.u32()? as usize;
            self.take(n)
        }
    }
    let mut r = Reader(bytes);
    match r.take(1)?[0] {
        0 => {
            let status = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
            let count = r.u32()?;
            let mut headers = Vec::new();
            for _ in 0..count {
                let name = String::from_utf8(r.bytes()?.to_vec()).ok()?;
                headers.push((name, r.bytes()?.to_vec()));
            }
            let body = Bytes::copy_from_slice(r.bytes()?);
            Some(Ok(Buffered {
                status,
                headers,
                body,
            }))
        }
        1 => Some(Err(error_from_code(std::str::from_utf8(r.bytes()?).ok()?))),
        _ => None,
    }
}

/// A stable name for the errors kiln journals (the guest sees the matching `error-code`).
fn error_code(e: &Error) -> String {
    match e {
        Error::HttpRequestDenied => "denied".into(),
        Error::HttpResponseBodySize(_) => "body-size".into(),
        Error::HttpResponseTimeout => "timeout".into(),
        Error::ConnectionTimeout => "connect-timeout".into(),
        Error::ConnectionRefused => "refused".into(),
        Error::DestinationNotFound => "not-found".into(),
        Error::InternalError(Some(message)) => format!("other:{message}"),
        other => format!("other:{other}"),
    }
}

fn error_from_code(code: &str) -> Error {
    match code {
        "denied" => Error::HttpRequestDenied,
        "body-size" => Error::HttpResponseBodySize(None),
        "timeout" => Error::HttpResponseTimeout,
        "connect-timeout" => Error::ConnectionTimeout,
        "refused" => Error::ConnectionRefused,
        "not-found" => Error::DestinationNotFound,
        other => Error::InternalError(Some(
            other.strip_prefix("other:").unwrap_or(other).to_owned(),
        )),
    }
}

impl WasiHttpHooks for KilnHttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let number = self.sent;
        self.sent = self.sent.saturating_add(1);
        let uri = request.uri().clone();
        // A replay answers from the journal; `digest` is what is recorded later, once the
        // request has moved into the client.
        let (replayed, digest) = {
            let uri = uri.to_string();
            let call = calls::http(request.method().as_str(), &uri);
            let replayed = self
                .journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .http_replayed(number, &call);
            (replayed, calls::digested(call.digest(Format::CURRENT)))
        };
        match replayed {
            Ok(Some(bytes)) => {
                return ready(match decode_outcome(&bytes) {
                    Some(Ok(r)) => r.into_response(),
                    Some(Err(e)) => Err(e),
                    None => Err(Error::InternalError(Some(
                        "the journaled response is corrupt".into(),
                    ))),
                });
            }
            Ok(None) => {}
            Err(divergence) => return ready(Err(Error::InternalError(Some(divergence.0)))),
        }

        let policy = self.policy.clone();
        let (journal, logs) = (self.journal.clone(), self.logs.clone());
        let denied = |message: String| -> SendFuture {
            log(&logs, LogLevel::Warn, message);
            let outcome = Err(Error::HttpRequestDenied);
            journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_http(number, &digest, &encode_outcome(&outcome));
            ready(outcome.and_then(Buffered::into_response))
        };
        if number >= policy.limits.max_requests {
            return denied(format!(
                "outbound request to {uri} denied: the attempt already made {} requests, the limit of one attempt",
                policy.limits.max_requests
            ));
        }
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or_else(|| default_port(&scheme));
        let origin = format!("{scheme}://{host}:{port}");
        let Some(rule) = policy
            .allow
            .iter()
            .find(|r| r.matches(&scheme, &host, port))
            .cloned()
        else {
            return denied(format!(
                "outbound request to {origin} denied: the environment's allow-list does not include it; {}",
                policy.how_to_allow
            ));
        };

        let services = self.services.clone();
        Box::new(async move {
            // Nothing leaves the sandbox before the attempt's start is durable.
            if let Some(services) = services
                && let Err(why) = services.start_durable().await
            {
                log(
                    &logs,
                    LogLevel::Error,
                    format!("outbound request to {origin} not sent: {why}"),
                );
                return Err(Error::InternalError(Some(why)));
            }
            let limits = policy.limits.clone();
            let work = async {
                // Only a rule naming the host exactly lets it resolve to an internal address.
                if !rule.is_exact() {
                    let addrs = tokio::time::timeout(
                        limits.connect_timeout,
                        tokio::net::lookup_host((host.as_str(), port)),
                    )
                    .await
                    .map_err(|_| Error::ConnectionTimeout)?
                    .map_err(|_| Error::DestinationNotFound)?;
                    if let Some(ip) = addrs.map(|a| a.ip()).find(|ip| is_internal(*ip)) {
                        log(
                            &logs,
                            LogLevel::Warn,
                            format!(
                                "outbound request to {origin} denied: {host} resolves to the internal address {ip}, which only a rule naming the host exactly allows; {}",
                                policy.how_to_allow
                            ),
                        );
                        return Err(Error::HttpRequestDenied);
                    }
                }
                // The guest's own timeouts hold where shorter; the total limit wraps them all.
                let options = RequestOptions {
                    connect_timeout: Some(
                        options
                            .and_then(|o| o.connect_timeout)
                            .map_or(limits.connect_timeout, |d| d.min(limits.connect_timeout)),
                    ),
                    first_byte_timeout: options.and_then(|o| o.first_byte_timeout),
                    between_bytes_timeout: options.and_then(|o| o.between_bytes_timeout),
                };
                let (response, io) =
                    wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
                // The connection must be driven while the body is read.
                let io = tokio::spawn(io);
                let (parts, mut body) = response.into_parts();
                let too_big = |size: Option<u64>| {
                    log(
                        &logs,
                        LogLevel::Warn,
                        format!(
                            "the response from {origin} is larger than the limit of {} bytes; the guest got an error instead",
                            limits.max_response_bytes
                        ),
                    );
                    Error::HttpResponseBodySize(size)
                };
                let declared = parts
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if declared.is_some_and(|n| n > limits.max_response_bytes as u64) {
                    io.abort();
                    return Err(too_big(declared));
                }
                let mut buffer = BytesMut::new();
                while let Some(frame) = body.frame().await {
                    if let Ok(data) = frame?.into_data() {
                        if buffer.len() + data.len() > limits.max_response_bytes {
                            io.abort();
                            return Err(too_big(None));
                        }
                        buffer.extend_from_slice(&data);
                    }
                }
                let headers = parts
                    .headers
                    .iter()
                    .filter(|(name, _)| {
                        *name != http::header::TRANSFER_ENCODING
                            && *name != http::header::CONTENT_LENGTH
                    })
                    .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
                    .chain([(
                        http::header::CONTENT_LENGTH.as_str().to_owned(),
                        buffer.len().to_string().into_bytes(),
                    )])
                    .collect();
                Ok(Buffered {
                    status: parts.status.as_u16(),
                    headers,
                    body: buffer.freeze(),
                })
            };
            let outcome = match tokio::time::timeout(limits.total_timeout, work).await {
                Ok(Err(e))
                    if !matches!(e, Error::HttpRequestDenied | Error::HttpResponseBodySize(_)) =>
                {
                    log(
                        &logs,
                        LogLevel::Warn,
                        format!("the request to {origin} failed: {e}"),
                    );
                    Err(e)
                }
                Ok(outcome) => outcome,
                Err(_) => {
                    log(
                        &logs,
                        LogLevel::Warn,
                        format!(
                            "the request to {origin} took longer than {} ms; the guest got a timeout",
                            limits.total_timeout.as_millis()
                        ),
                    );
                    Err(Error::HttpResponseTimeout)
                }
            };
            journal
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .record_http(number, &digest, &encode_outcome(&outcome));
            outcome
                .and_then(Buffered::into_response)
                .map(|r| (r, no_io()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(rules: &[&str], scheme: &str, host: &str, port: u16) -> bool {
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        parse_allow_list(&rules)
            .unwrap()
            .iter()
            .any(|r| r.matches(scheme, host, port))
    }

    #[test]
    fn rules_match_scheme_host_and_port_as_spin_does() {
        let api = ["https://api.example.com"];
        assert!(allowed(&api, "https", "api.example.com", 443));
        assert!(!allowed(&api, "http", "api.example.com", 80));
        assert!(!allowed(&api, "https", "api.example.com", 8443));
        assert!(!allowed(&api, "https", "evil.com", 443));
        let wild = ["https://*.example.com"];
        assert!(allowed(&wild, "https", "a.b.example.com", 443));
        assert!(!allowed(&wild, "https", "example.com", 443));
        assert!(!allowed(&wild, "https", "notexample.com", 443));
        assert!(allowed(&["*://example.com:*"], "http", "example.com", 8080));
        assert!(allowed(
            &["http://127.0.0.1:8080"],
            "http",
            "127.0.0.1",
            8080
        ));
        assert!(allowed(&["https://*"], "https", "anything.io", 443));
        assert!(allowed(&["http://[::1]:81"], "http", "::1", 81));
        for bad in [
            "example.com",
            "ftp://x",
            "https://",
            "https://a/b",
            "https://x:port",
            "https://a*b",
            "https://*.",
        ] {
            assert!(OutboundRule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn outcomes_round_trip_through_the_journal_encoding() {
        let ok = Buffered {
            status: 201,
            headers: vec![
                ("x-a".into(), b"1".to_vec()),
                ("content-length".into(), b"2".to_vec()),
            ],
            body: Bytes::from_static(b"hi"),
        };
        match decode_outcome(&encode_outcome(&Ok(ok.clone()))) {
            Some(Ok(back)) => assert_eq!(back, ok),
            other => panic!("{other:?}"),
        }
        for e in [
            Error::HttpRequestDenied,
            Error::HttpResponseTimeout,
            Error::HttpResponseBodySize(None),
            Error::InternalError(Some("boom".into())),
        ] {
            let code = error_code(&e);
            let back = decode_outcome(&encode_outcome(&Err(e)))
                .unwrap()
                .unwrap_err();
            assert_eq!(error_code(&back), code);
        }
        assert!(decode_outcome(&[0, 1]).is_none(), "truncated");
    }
}
