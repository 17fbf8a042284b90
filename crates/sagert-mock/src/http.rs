//! Just enough HTTP/1.1 to serve OpenAI-style clients: request heads with a
//! `Content-Length` body, keep-alive, and responses written byte for byte so
//! that faults can lie about lengths or stop half way.
//!
//! Buffers belong to the connection and are reused from one request to the
//! next; parsing records byte ranges into the read buffer instead of copying.

use std::io::{self, Write};
use std::ops::Range;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted (request line plus headers).
pub(crate) const MAX_HEAD: usize = 32 * 1024;
/// Largest request body accepted.
pub(crate) const MAX_BODY: usize = 32 * 1024 * 1024;

/// A request that could not be framed. Every variant except `Io` is answered
/// with its status code before the connection is closed.
#[derive(Debug)]
pub(crate) enum HttpError {
    /// The socket failed or closed mid-request: nobody to answer.
    Io,
    Bad(&'static str),
    HeadTooLarge,
    BodyTooLarge,
    Unsupported(&'static str),
    Version,
}

impl HttpError {
    /// The status and message to answer with, or `None` when the socket is gone.
    pub(crate) fn response(&self) -> Option<(u16, &'static str)> {
        match self {
            HttpError::Io => None,
            HttpError::Bad(message) => Some((400, message)),
            HttpError::HeadTooLarge => Some((431, "request head too large")),
            HttpError::BodyTooLarge => Some((413, "request body too large")),
            HttpError::Unsupported(message) => Some((501, message)),
            HttpError::Version => Some((505, "only HTTP/1.0 and HTTP/1.1 are supported")),
        }
    }
}

impl From<io::Error> for HttpError {
    fn from(_: io::Error) -> Self {
        HttpError::Io
    }
}

/// A parsed request head; string fields are ranges into the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestHead {
    method: Range<usize>,
    path: Range<usize>,
    authorization: Option<Range<usize>>,
    /// Bytes of the head including the blank line.
    pub head_len: usize,
    pub content_length: usize,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl RequestHead {
    pub(crate) fn method<'a>(&self, buf: &'a [u8]) -> &'a str {
        text(buf, &self.method)
    }

    /// The request target without its query string.
    pub(crate) fn path<'a>(&self, buf: &'a [u8]) -> &'a str {
        text(buf, &self.path)
    }

    pub(crate) fn authorization<'a>(&self, buf: &'a [u8]) -> Option<&'a str> {
        self.authorization.as_ref().map(|range| text(buf, range))
    }

    /// The body, once [`read_body`] has returned.
    pub(crate) fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.head_len..self.request_len()]
    }

    /// Bytes of head and body together: what to drop from the buffer afterwards.
    pub(crate) fn request_len(&self) -> usize {
        self.head_len + self.content_length
    }
}

// The whole head was checked to be UTF-8 and ranges start and end at ASCII
// delimiters, so this never falls back.
fn text<'a>(buf: &'a [u8], range: &Range<usize>) -> &'a str {
    std::str::from_utf8(&buf[range.clone()]).unwrap_or_default()
}

/// Reads until `buf` holds a complete request head and parses it. `Ok(None)`
/// means the peer closed the connection cleanly between requests.
pub(crate) async fn read_head<S>(stream: &mut S, buf: &mut Vec<u8>) -> Result<Option<RequestHead>, HttpError>
where
    S: AsyncRead + Unpin,
{
    let mut scanned = 0usize;
    let head_len = loop {
        let start = scanned.saturating_sub(3);
        if let Some(at) = find_blank_line(&buf[start..]) {
            break start + at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(HttpError::HeadTooLarge);
        }
        scanned = buf.len();
        if read_more(stream, buf).await? == 0 {
            if buf.iter().all(u8::is_ascii_whitespace) {
                return Ok(None);
            }
            return Err(HttpError::Io);
        }
    };
    if head_len > MAX_HEAD {
        return Err(HttpError::HeadTooLarge);
    }
    parse_head(&buf[..head_len]).map(Some)
}

/// Reads until `buf` holds the whole body announced by `head`, first sending
/// `100 Continue` when the client asked for it.
pub(crate) async fn read_body<S>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    head: &RequestHead,
) -> Result<(), HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if buf.len() >= head.request_len() {
        return Ok(());
    }
    if head.expect_continue {
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    while buf.len() < head.request_len() {
        if read_more(stream, buf).await? == 0 {
            return Err(HttpError::Io);
        }
    }
    Ok(())
}

async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> io::Result<usize> {
    buf.reserve(4096);
    stream.read_buf(buf).await
}

fn find_blank_line(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|window| window == b"\r\n\r\n")
}

/// Parses a complete head (ending in the blank line).
pub(crate) fn parse_head(head: &[u8]) -> Result<RequestHead, HttpError> {
    let text = std::str::from_utf8(head).map_err(|_| HttpError::Bad("request head is not UTF-8"))?;
    let offset = |part: &str| {
        let start = part.as_ptr() as usize - text.as_ptr() as usize;
        start..start + part.len()
    };
    // Clients may send stray CRLFs between requests (RFC 9112 section 2.2).
    let mut lines = text.trim_start_matches("\r\n").split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Bad("malformed request line"));
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(HttpError::Bad("malformed request method"));
    }
    if !target.starts_with('/') {
        return Err(HttpError::Bad("request target must be an absolute path"));
    }
    let path = target.split('?').next().unwrap_or(target);
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ if version.starts_with("HTTP/") => return Err(HttpError::Version),
        _ => return Err(HttpError::Bad("malformed request line")),
    };

    let mut content_length = None;
    let mut authorization = None;
    let mut expect_continue = false;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HttpError::Bad("malformed header line"))?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(HttpError::Bad("malformed header name"));
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::Bad("invalid Content-Length"));
            }
            let length: usize = value.parse().map_err(|_| HttpError::BodyTooLarge)?;
            if content_length.is_some_and(|previous| previous != length) {
                return Err(HttpError::Bad("conflicting Content-Length headers"));
            }
            content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::Unsupported("Transfer-Encoding is not supported; send Content-Length"));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            authorization = Some(offset(value));
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY {
        return Err(HttpError::BodyTooLarge);
    }
    Ok(RequestHead {
        method: offset(method),
        path: offset(path),
        authorization,
        head_len: head.len(),
        content_length,
        keep_alive,
        expect_continue,
    })
}

/// What goes into a response head besides the status line.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResponseHead {
    pub status: u16,
    /// The announced length; a fault may send fewer bytes.
    pub content_length: usize,
    pub close: bool,
    pub retry_after: Option<Duration>,
}

/// Appends a JSON response head to `out`.
pub(crate) fn write_head(out: &mut Vec<u8>, head: &ResponseHead) {
    let ResponseHead { status, content_length, close, retry_after } = *head;
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nserver: sagert-mock\r\ncontent-type: application/json\r\n\
         content-length: {content_length}\r\n",
        reason(status)
    );
    if let Some(delay) = retry_after {
        // Retry-After only has whole seconds; OpenAI's clients also read the
        // finer `retry-after-ms`, which keeps sub-second backoffs testable.
        let seconds = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
        let _ = write!(out, "retry-after: {seconds}\r\nretry-after-ms: {}\r\n", delay.as_millis());
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses this server sends.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<RequestHead, HttpError> {
        parse_head(head.as_bytes())
    }

    #[test]
    fn parses_method_path_and_headers_case_insensitively() {
        let raw = "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\ncontent-LENGTH: 12\r\n\
                   AUTHORIZATION:  Bearer sk-1 \r\n\r\n";
        let head = parse(raw).unwrap();
        let buf = raw.as_bytes();
        assert_eq!(head.method(buf), "POST");
        assert_eq!(head.path(buf), "/v1/chat/completions");
        assert_eq!(head.authorization(buf), Some("Bearer sk-1"));
        assert_eq!(head.content_length, 12);
        assert_eq!(head.head_len, raw.len());
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn connection_header_decides_keep_alive() {
        assert!(!parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").unwrap().keep_alive);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(parse("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn rejects_what_it_cannot_frame() {
        let status = |raw: &str| parse(raw).unwrap_err().response().map(|(status, _)| status);
        assert_eq!(status("GARBAGE\r\n\r\n"), Some(400));
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), Some(505));
        assert_eq!(status("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"), Some(501));
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"), Some(400));
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), Some(400));
        assert_eq!(status("POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n"), Some(413));
        assert_eq!(status("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n"), Some(400));
    }

    #[test]
    fn retry_after_rounds_seconds_up_and_keeps_milliseconds() {
        let mut out = Vec::new();
        let head = ResponseHead {
            status: 429,
            content_length: 7,
            close: true,
            retry_after: Some(Duration::from_millis(1500)),
        };
        write_head(&mut out, &head);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{text}");
        assert!(text.contains("content-length: 7\r\n"), "{text}");
        assert!(text.contains("retry-after: 2\r\nretry-after-ms: 1500\r\n"), "{text}");
        assert!(text.ends_with("connection: close\r\n\r\n"), "{text}");
    }
}
