//! libpq connection URLs that psql, tokio-postgres, sqlx and diesel all accept.

use std::path::Path;

/// Where a client connects: a Unix socket directory, or TCP on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Endpoint<'a> {
    Socket(&'a Path),
    Tcp,
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
}
