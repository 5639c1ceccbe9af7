//! libpq connection URLs that psql, tokio-postgres, sqlx and diesel all accept.

use std::path::Path;

/// Where a client connects: a Unix socket directory, TCP on 127.0.0.1, or TCP to a named host.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    Socket(&'a Path),
    Tcp,
    Host(&'a str),
}

/// `postgresql://user[:password]@host:port/dbname`, with a socket directory written as a
/// percent-encoded host (`%2Ftmp%2Fpgclone-x`), the form the libpq docs give.
pub(crate) fn connection_url(
    endpoint: Endpoint<'_>,
    port: u16,
    user: &str,
    password: Option<&str>,
    dbname: &str,
) -> String {
    let host = match endpoint {
        Endpoint::Socket(dir) => encode(&dir.to_string_lossy()),
        Endpoint::Tcp => "127.0.0.1".to_string(),
        // An IPv6 address goes in brackets; a name or IPv4 address as it is.
        Endpoint::Host(host) if host.contains(':') => format!("[{host}]"),
        Endpoint::Host(host) => encode(host),
    };
    let credentials = match password {
        Some(password) => format!("{}:{}", encode(user), encode(password)),
        None => encode(user),
    };
    format!(
        "postgresql://{credentials}@{host}:{port}/{}",
        encode(dbname)
    )
}

/// `url` fit for a message: the password of a URL (`postgresql://user:<redacted>@host/db`, and a
/// `password=` parameter) or of a `key=value` connection string is replaced by `<redacted>`.
pub(crate) fn redacted(url: &str) -> String {
    const HIDDEN: &str = "<redacted>";
    let Some(scheme_end) = url.find("://") else {
        // `host=/tmp password='it''s' dbname=app`: hide the value after `password=`.
        return redact_parameter(url, ' ', HIDDEN);
    };
    let rest = &url[scheme_end + 3..];
    // The user information ends at the last `@` before the query, even if the password holds a
    // `/` it should have percent-encoded.
    let (before_query, query) = rest.split_at(rest.find(['?', '#']).unwrap_or(rest.len()));
    let before_query = match before_query.rfind('@') {
        Some(at) => match before_query[..at].split_once(':') {
            Some((user, _password)) => format!("{user}:{HIDDEN}{}", &before_query[at..]),
            None => before_query.to_string(),
        },
        None => before_query.to_string(),
    };
    let query = match query.strip_prefix('?') {
        Some(parameters) => format!("?{}", redact_parameter(parameters, '&', HIDDEN)),
        None => query.to_string(),
    };
    format!("{}://{before_query}{query}", &url[..scheme_end])
}

/// Replaces the value of every `password=` in `text`, whose parameters end at `separator` (a
/// quoted value, `'...'` with `\'` or `''` inside, runs to its closing quote).
fn redact_parameter(text: &str, separator: char, hidden: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("password") {
        let starts_parameter = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c == separator || c.is_whitespace());
        let after = &rest[at + "password".len()..];
        let value = after.trim_start();
        let Some(value) = value.strip_prefix('=').filter(|_| starts_parameter) else {
            out.push_str(&rest[..at + "password".len()]);
            rest = after;
            continue;
        };
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            let mut chars = quoted.char_indices();
            let mut end = value.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        chars.next();
                    }
                    '\'' if quoted[i + 1..].starts_with('\'') => {
                        chars.next();
                    }
                    '\'' => {
                        end = i + 2;
                        break;
                    }
                    _ => {}
                }
            }
            end
        } else {
            value
                .find(|c: char| c == separator || c.is_whitespace())
                .unwrap_or(value.len())
        };
        out.push_str(&rest[..rest.len() - value.len()]);
        out.push_str(hidden);
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_and_tcp_urls() {
        assert_eq!(
            connection_url(
                Endpoint::Socket(Path::new("/tmp/pgclone-ab")),
                5432,
                "postgres",
                None,
                "my db"
            ),
            "postgresql://postgres@%2Ftmp%2Fpgclone-ab:5432/my%20db"
        );
        assert_eq!(
            connection_url(Endpoint::Tcp, 6000, "postgres", Some("p@ss"), "app"),
            "postgresql://postgres:p%40ss@127.0.0.1:6000/app"
        );
    }

    #[test]
    fn redacted_hides_passwords_only() {
        let url = connection_url(Endpoint::Tcp, 6000, "postgres", Some("s3cr:t@x/y"), "app");
        assert_eq!(
            redacted(&url),
            "postgresql://postgres:<redacted>@127.0.0.1:6000/app"
        );
        let socket = connection_url(
            Endpoint::Socket(Path::new("/tmp/pgclone-ab")),
            5432,
            "postgres",
            None,
            "my db",
        );
        assert_eq!(redacted(&socket), socket, "nothing to hide");
        for (text, shown) in [
            (
                "postgres://u:pw@h/db?sslmode=disable&password=pw2&x=1",
                "postgres://u:<redacted>@h/db?sslmode=disable&password=<redacted>&x=1",
            ),
            (
                "postgresql://u@h:5/db?password=pw",
                "postgresql://u@h:5/db?password=<redacted>",
            ),
            ("postgresql://u:a/b@h/db", "postgresql://u:<redacted>@h/db"),
            (
                "host=/tmp password='it''s a \\' secret' dbname=app",
                "host=/tmp password=<redacted> dbname=app",
            ),
            ("password = pw user=me", "password = <redacted> user=me"),
            (
                "user=mypassword dbname=password",
                "user=mypassword dbname=password",
            ),
        ] {
            assert_eq!(redacted(text), shown, "{text}");
        }
    }
}
