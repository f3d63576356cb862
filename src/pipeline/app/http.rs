//! The host of an HTTP/1.x request: the authority of an absolute-form or CONNECT
//! target, else the `Host:` header. Only the client's bytes are looked at.

use super::Scan;
use super::tls::valid_host;

/// Request methods recognised (RFC 9110 and the common WebDAV ones).
const METHODS: [&[u8]; 13] = [
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"DELETE",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"MOVE",
];
/// Longest method, plus the space after it.
const METHOD_MAX: usize = 10;

/// Whether `prefix`, the first bytes of a client's stream, can start an HTTP
/// request: `Some(true)` yes, `Some(false)` no, `None` too short to say.
pub fn looks_like_http(prefix: &[u8]) -> Option<bool> {
    let mut maybe = false;
    for m in METHODS {
        let n = prefix.len().min(m.len());
        if prefix[..n] != m[..n] {
            continue;
        }
        match prefix.get(m.len()) {
            Some(b' ') => return Some(true),
            Some(_) => {}
            None => maybe = true,
        }
    }
    if maybe { None } else { Some(false) }
}

/// The host an HTTP/1.x request in `data` (the client's stream so far) is for.
pub fn request_host(data: &[u8]) -> Scan<'_> {
    match looks_like_http(&data[..data.len().min(METHOD_MAX)]) {
        Some(true) => {}
        Some(false) => return Scan::Nothing,
        None => return Scan::More,
    }
    let mut lines = Lines { data, pos: 0 };
    let Some(request) = lines.next() else {
        return Scan::More;
    };
    let mut parts = request.split(|&b| b == b' ').filter(|p| !p.is_empty());
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Scan::Nothing;
    };
    if !matches!(version, b"HTTP/1.0" | b"HTTP/1.1") {
        return Scan::Nothing;
    }
    if method == b"CONNECT" {
        return host_of(target);
    }
    if let Some(rest) = strip_prefix_ci(target, b"http://").or(strip_prefix_ci(target, b"https://"))
    {
        // Absolute form: the target's authority overrides Host (RFC 9112 3.2.2).
        let authority = rest
            .split(|&b| b == b'/' || b == b'?')
            .next()
            .unwrap_or(rest);
        let authority = match authority.iter().rposition(|&b| b == b'@') {
            Some(at) => &authority[at + 1..],
            None => authority,
        };
        return host_of(authority);
    }
    loop {
        let Some(line) = lines.next() else {
            return Scan::More;
        };
        if line.is_empty() {
            return Scan::Nothing; // end of headers without a Host
        }
        if let Some(value) = strip_prefix_ci(line, b"host:") {
            return host_of(value);
        }
    }
}

/// The complete lines of `data` (ending in LF, without CR LF); a final line
/// without its LF is not returned.
struct Lines<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.data[self.pos..];
        let nl = rest.iter().position(|&b| b == b'\n')?;
        self.pos += nl + 1;
        let line = &rest[..nl];
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`).
fn host_of(authority: &[u8]) -> Scan<'_> {
    let a = authority.trim_ascii();
    if a.starts_with(b"[") {
        return Scan::Nothing; // an IPv6 literal never names an application
    }
    let host = match a.iter().rposition(|&b| b == b':') {
        Some(colon) if a[colon + 1..].iter().all(u8::is_ascii_digit) => &a[..colon],
        Some(_) => return Scan::Nothing,
        None => a,
    };
    valid_host(host).map_or(Scan::Nothing, Scan::Host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_header() {
        let req = b"GET /index.html HTTP/1.1\r\nUser-Agent: t\r\nhOsT:  www.Example.com:8080 \r\nAccept: */*\r\n\r\n";
        assert_eq!(request_host(req), Scan::Host("www.Example.com"));
        let req = b"POST / HTTP/1.0\nHost: a.example\n\n";
        assert_eq!(request_host(req), Scan::Host("a.example"));
    }

    #[test]
    fn split_request() {
        let req = b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: split.example\r\n\r\n";
        // The host is only trusted once its line has ended.
        let line_end = req.windows(5).position(|w| w == b"Host:").unwrap() + 21;
        for n in 0..req.len() {
            let want = if n < line_end {
                Scan::More
            } else {
                Scan::Host("split.example")
            };
            assert_eq!(request_host(&req[..n]), want, "{n}");
        }
        assert_eq!(request_host(req), Scan::Host("split.example"));
    }

    #[test]
    fn absolute_and_connect() {
        assert_eq!(
            request_host(b"GET http://user@Proxy.Example:81/x HTTP/1.1\r\nHost: other\r\n"),
            Scan::Host("Proxy.Example")
        );
        assert_eq!(
            request_host(b"CONNECT tunnel.example:443 HTTP/1.1\r\n"),
            Scan::Host("tunnel.example")
        );
    }

    #[test]
    fn not_http_or_no_host() {
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nAccept: x\r\n\r\n"),
            Scan::Nothing
        );
        assert_eq!(request_host(b"PRI * HTTP/2.0\r\n\r\n"), Scan::Nothing);
        assert_eq!(request_host(b"GETX / HTTP/1.1\r\n"), Scan::Nothing);
        assert_eq!(request_host(b"SSH-2.0-OpenSSH\r\n"), Scan::Nothing);
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nHost: [::1]:80\r\n"),
            Scan::Nothing
        );
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nHost: a b\r\n"),
            Scan::Nothing
        );
        assert_eq!(
            request_host(b"GET / HTTP/1.1\r\nHost: a:b\r\n"),
            Scan::Nothing
        );
        assert_eq!(request_host(b"GE"), Scan::More);
        assert_eq!(request_host(b""), Scan::More);
        assert_eq!(looks_like_http(b"PROP"), None);
        assert_eq!(looks_like_http(b"PROPFIND "), Some(true));
        assert_eq!(looks_like_http(b"\x16\x03"), Some(false));
    }
}
