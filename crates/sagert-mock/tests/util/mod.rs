//! A raw HTTP/1.1 client for the mock: requests are written by hand and
//! responses read byte for byte, so tests see exactly what went on the wire.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").map(|value| value.parse().expect("numeric content-length"))
    }

    /// The body as JSON; panics with the body text when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!("body is not JSON ({error}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// `error.message` of an OpenAI error body.
    pub fn error_message(&self) -> String {
        self.json()["error"]["message"].as_str().expect("error.message").to_owned()
    }
}

/// A chat request body with one user message.
pub fn user(text: &str) -> Value {
    json!({ "model": "anything", "messages": [{ "role": "user", "content": text }] })
}

/// The bytes of one request.
pub fn request_bytes(method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Parses the response head at the start of `bytes` into a response with an
/// empty body, and the head's length; `None` until the blank line has arrived.
pub fn parse_head(bytes: &[u8]) -> Option<(Response, usize)> {
    let end = bytes.windows(4).position(|window| window == b"\r\n\r\n")? + 4;
    let text = std::str::from_utf8(&bytes[..end]).expect("UTF-8 response head");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    assert!(status_line.starts_with("HTTP/1.1 "), "status line {status_line:?}");
    let status = status_line[9..12].parse().expect("numeric status");
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| {
            let (name, value) = line.split_once(':').expect("header line");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    Some((Response { status, headers, body: Vec::new() }, end))
}

/// One async connection to the server.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        Client { stream: TcpStream::connect(addr).await.expect("connect to the mock"), buf: Vec::new() }
    }

    pub async fn send(&mut self, method: &str, path: &str, body: &[u8], headers: &[(&str, &str)]) {
        let request = request_bytes(method, path, body, headers);
        self.stream.write_all(&request).await.expect("write request");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write request");
    }

    /// Posts `body` to the chat route and reads the answer.
    pub async fn chat(&mut self, body: &Value) -> Response {
        self.send("POST", "/v1/chat/completions", body.to_string().as_bytes(), &[]).await;
        self.response().await.expect("a complete response")
    }

    /// Reads one response framed by its Content-Length; `UnexpectedEof` when
    /// the connection ends first.
    pub async fn response(&mut self) -> io::Result<Response> {
        let (mut response, head_len) = loop {
            if let Some(head) = parse_head(&self.buf) {
                break head;
            }
            self.fill().await?;
        };
        let length = response.content_length().expect("content-length header");
        while self.buf.len() < head_len + length {
            self.fill().await?;
        }
        response.body = self.buf[head_len..head_len + length].to_vec();
        self.buf.drain(..head_len + length);
        Ok(response)
    }

    /// Everything until the peer closes, including what is already buffered.
    pub async fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        self.stream.read_to_end(&mut self.buf).await?;
        Ok(std::mem::take(&mut self.buf))
    }

    /// Waits up to `within` for bytes: `Some(n)` when something (or EOF, as 0)
    /// came, `None` on timeout.
    pub async fn read_within(&mut self, within: Duration) -> Option<usize> {
        let mut scratch = [0u8; 1024];
        match tokio::time::timeout(within, self.stream.read(&mut scratch)).await {
            Ok(result) => Some(result.unwrap_or(0)),
            Err(_) => None,
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut scratch = [0u8; 4096];
        let n = self.stream.read(&mut scratch).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&scratch[..n]);
        Ok(())
    }
}

/// One chat request on a fresh connection.
pub async fn chat(addr: SocketAddr, body: &Value) -> Response {
    Client::connect(addr).await.chat(body).await
}

/// One chat request with a blocking std socket and `Connection: close`.
pub fn blocking_chat(addr: SocketAddr, body: &Value) -> Response {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the mock");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let request = request_bytes(
        "POST",
        "/v1/chat/completions",
        body.to_string().as_bytes(),
        &[("connection", "close"), ("authorization", "Bearer sk-sync")],
    );
    stream.write_all(&request).expect("write request");
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read response");
    let (mut response, head_len) = parse_head(&bytes).expect("a response head");
    response.body = bytes[head_len..].to_vec();
    response
}
