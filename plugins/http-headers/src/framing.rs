//! HTTP/1.x request framing on a client's byte stream, split anywhere: where
//! each request head starts and ends, and how long its body is
//! (`Content-Length`, or the chunked transfer coding with its trailers), so
//! that every head of a keep-alive or pipelined connection is found and no
//! body byte is ever taken for one. An upgrade (`Upgrade` with `Connection:
//! upgrade`) or a `CONNECT` turns the rest of the stream into a tunnel.

/// Longest request head accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_LINE: usize = 8 * 1024;

/// Where the stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Passing this many more body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Passing this many more bytes of chunk data.
    ChunkData(u64),
    /// The line end after chunk data: bytes of it seen.
    ChunkEnd(u8),
    /// The trailer section after the last chunk, up to its empty line.
    Trailers(Vec<u8>),
    /// After an upgrade or a `CONNECT`: everything passes.
    Tunnel,
}

/// A request head, parsed: the request line's bytes, the headers as
/// written, the method.
pub struct Head<'a> {
    pub line: &'a [u8],
    pub method: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

impl Head<'_> {
    /// The values of header `name` (any case).
    pub fn values(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }

    /// Whether the comma-separated header `name` has `token` (any case).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.values(name)
            .any(|v| v.split(|&b| b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())))
    }
}

/// What replaces a complete head: it appends the head's new form to the
/// output it is given.
pub type Rewrite<'r> = dyn Fn(&Head<'_>, &mut Vec<u8>) + 'r;

/// One client's request stream.
#[derive(Debug, Clone)]
pub struct Requests {
    state: State,
}

impl Default for Requests {
    fn default() -> Self {
        Requests { state: State::Head(Vec::new()) }
    }
}

impl Requests {
    /// Take `data`, the next bytes of the stream: what to forward, with each
    /// complete head replaced by what `rewrite` appends in its place, or
    /// `Err` with why the stream is not HTTP/1.x it can follow. Bytes of a
    /// head not yet complete are held.
    pub fn feed(&mut self, mut data: &[u8], rewrite: &Rewrite<'_>) -> Result<Vec<u8>, String> {
        // Room for what a rewrite usually adds to a head, so that the output
        // is allocated once.
        let mut out = Vec::with_capacity(data.len() + 256);
        while !data.is_empty() {
            match &mut self.state {
                State::Tunnel => {
                    out.extend_from_slice(data);
                    data = &[];
                }
                State::Body(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    out.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::Head(Vec::new());
                    }
                }
                State::ChunkData(left) => {
                    let n = usize::try_from(*left).unwrap_or(usize::MAX).min(data.len());
                    out.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = State::ChunkEnd(0);
                    }
                }
                State::ChunkEnd(seen) => {
                    let want = b"\r\n"[usize::from(*seen)];
                    if data[0] != want {
                        return Err("chunk data not followed by CRLF".into());
                    }
                    out.push(data[0]);
                    data = &data[1..];
                    *seen += 1;
                    if *seen == 2 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                }
                State::ChunkSize(line) => {
                    let (taken, done) = take_line(line, data);
                    out.extend_from_slice(&data[..taken]);
                    data = &data[taken..];
                    if line.len() > MAX_LINE {
                        return Err("chunk-size line too long".into());
                    }
                    if done {
                        let size = chunk_size(line)?;
                        self.state = if size == 0 { State::Trailers(Vec::new()) } else { State::ChunkData(size) };
                    }
                }
                State::Trailers(section) => {
                    // Ends with an empty line: CRLF at its start, or CRLFCRLF.
                    let before = section.len();
                    section.extend_from_slice(data);
                    let end = if section.starts_with(b"\r\n") {
                        Some(2)
                    } else {
                        find(section, b"\r\n\r\n", before.saturating_sub(3)).map(|p| p + 4)
                    };
                    match end {
                        Some(end) => {
                            let taken = end - before;
                            out.extend_from_slice(&data[..taken]);
                            data = &data[taken..];
                            self.state = State::Head(Vec::new());
                        }
                        None if section.len() > MAX_LINE => return Err("trailer section too long".into()),
                        None => {
                            out.extend_from_slice(data);
                            data = &[];
                        }
                    }
                }
                State::Head(head) => {
                    if head.is_empty()
                        && let Some((end, next)) = parse(data, rewrite, &mut out, Take::Prefix)?
                    {
                        // A whole head in hand, nothing held: parsed where it is.
                        data = &data[end..];
                        self.state = next;
                        continue;
                    }
                    let before = head.len();
                    head.extend_from_slice(data);
                    let Some(end) = find(head, b"\r\n\r\n", before.saturating_sub(3)).map(|p| p + 4) else {
                        if head.len() > MAX_HEAD {
                            return Err(format!("request head over {} KiB", MAX_HEAD / 1024));
                        }
                        data = &[];
                        continue;
                    };
                    data = &data[end - before..];
                    let head = std::mem::take(head);
                    let (_, next) =
                        parse(&head[..end], rewrite, &mut out, Take::Exactly)?.ok_or("incomplete request head")?;
                    self.state = next;
                }
            }
        }
        Ok(out)
    }

    /// Whether the stream has become a tunnel: the rest passes unchanged.
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    /// The client has finished sending: what a head that never completed
    /// held (passed on as it came, for the server to judge).
    pub fn finish(&mut self) -> Vec<u8> {
        match &mut self.state {
            State::Head(head) => std::mem::take(head),
            _ => Vec::new(),
        }
    }
}

/// How a head is looked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Take {
    /// `bytes` is a whole head, up to the first CRLFCRLF of the stream.
    Exactly,
    /// A head may start `bytes`: `None` unless it is there whole, ending
    /// with CRLFCRLF (so it ends where the search for that would), and
    /// parses. A head that does not is left to the search, so the outcome
    /// does not depend on where the stream was split.
    Prefix,
}

/// Parse the head at the start of `bytes` and append its rewritten form to
/// `out`: how long it was and what follows it; `None` (with
/// [`Take::Prefix`]) when there is none.
fn parse(bytes: &[u8], rewrite: &Rewrite<'_>, out: &mut Vec<u8>, take: Take) -> Result<Option<(usize, State)>, String> {
    // Left uninitialised: httparse writes the slots it fills, and zeroing
    // 128 of them cost more than parsing a short head.
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut request = httparse::Request::new(&mut []);
    let len = match (request.parse_with_uninit_headers(bytes, &mut slots), take) {
        (Ok(httparse::Status::Complete(n)), Take::Exactly) if n == bytes.len() => n,
        (Ok(httparse::Status::Complete(n)), Take::Prefix) if bytes[..n].ends_with(b"\r\n\r\n") => n,
        (_, Take::Prefix) => return Ok(None),
        (Ok(_), Take::Exactly) => return Err("incomplete request head".into()),
        (Err(err), Take::Exactly) => return Err(format!("malformed request head: {err}")),
    };
    let bytes = &bytes[..len];
    let line_end = match bytes.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && bytes[lf - 1] == b'\r' => lf - 1,
        _ => find(bytes, b"\r\n", 0).unwrap_or(0),
    };
    let head = Head { line: &bytes[..line_end], method: request.method.unwrap_or(""), headers: request.headers };
    let chunked = match head.values("transfer-encoding").last() {
        None => false,
        Some(_) if head.values("content-length").next().is_some() => {
            return Err("both Transfer-Encoding and Content-Length".into());
        }
        Some(last) => {
            let last_coding = last.rsplit(|&b| b == b',').next().unwrap_or_default().trim_ascii();
            if !last_coding.eq_ignore_ascii_case(b"chunked") {
                return Err("a request body whose last transfer coding is not chunked".into());
            }
            true
        }
    };
    let length = content_length(&head)?;
    let tunnel = head.method.eq_ignore_ascii_case("CONNECT")
        || (head.values("upgrade").next().is_some() && head.has_token("connection", "upgrade"));
    let next = if chunked {
        State::ChunkSize(Vec::new())
    } else if length > 0 {
        State::Body(length)
    } else if tunnel {
        State::Tunnel
    } else {
        State::Head(Vec::new())
    };
    rewrite(&head, out);
    Ok(Some((len, next)))
}

/// The request's `Content-Length` (0 without one); several must agree.
fn content_length(head: &Head<'_>) -> Result<u64, String> {
    let mut length = None;
    for value in head.values("content-length") {
        for part in value.split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err("a Content-Length that is not a number".into());
            }
            let n: u64 =
                std::str::from_utf8(part).ok().and_then(|s| s.parse().ok()).ok_or("Content-Length too large")?;
            if length.is_some_and(|l| l != n) {
                return Err("Content-Length values that differ".into());
            }
            length = Some(n);
        }
    }
    Ok(length.unwrap_or(0))
}

/// Move bytes of `data` onto `line` up to and including its LF: how many
/// were taken, and whether the line is complete.
fn take_line(line: &mut Vec<u8>, data: &[u8]) -> (usize, bool) {
    match data.iter().position(|&b| b == b'\n') {
        Some(p) => {
            line.extend_from_slice(&data[..=p]);
            (p + 1, true)
        }
        None => {
            line.extend_from_slice(data);
            (data.len(), false)
        }
    }
}

/// The size of a chunk-size line (`1a;ext=x\r\n`).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let line = line.strip_suffix(b"\r\n").ok_or("chunk-size line not ended by CRLF")?;
    let digits = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err("a chunk size that is not a hexadecimal number".into());
    }
    let text = std::str::from_utf8(digits).map_err(|e| e.to_string())?;
    u64::from_str_radix(text, 16).map_err(|e| e.to_string())
}

/// The first `needle` in `hay` at or after `from`.
fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?.windows(needle.len()).position(|w| w == needle).map(|p| p + from)
}
