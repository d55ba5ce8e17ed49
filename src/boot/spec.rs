//! Parsing of `--health` and `--forward` (pure).

use std::fmt;

/// What "healthy" means for `--health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthSpec {
    /// GET `path` on guest `port`; any 2xx is healthy. `authority` is sent as the Host header.
    Http {
        port: u16,
        path: String,
        authority: String,
    },
    /// A TCP connection to guest `port` that sends at least one byte (a banner).
    Tcp { port: u16 },
}

impl HealthSpec {
    /// The guest port the check talks to (it is forwarded automatically).
    pub fn guest_port(&self) -> u16 {
        match self {
            HealthSpec::Http { port, .. } | HealthSpec::Tcp { port } => *port,
        }
    }
}

impl fmt::Display for HealthSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthSpec::Http {
                authority, path, ..
            } => write!(f, "http://{authority}{path}"),
            HealthSpec::Tcp { port } => write!(f, "tcp:{port}"),
        }
    }
}

/// A `--health` or `--forward` value that cannot be read: the message names the flag and
/// what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadSpec(pub String);

/// Parse `http://HOST[:PORT]/PATH` or `tcp:PORT`. The host names the guest and is only used
/// for the Host header; the port defaults to 80.
pub fn parse_health(s: &str) -> Result<HealthSpec, BadSpec> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix("tcp:") {
        let port = parse_port(port).map_err(|e| BadSpec(format!("--health {s:?}: {e}")))?;
        return Ok(HealthSpec::Tcp { port });
    }
    if s.starts_with("https://") {
        return Err(BadSpec(format!(
            "--health {s:?}: https is not supported; check the plain http port or use tcp:PORT"
        )));
    }
    let Some(rest) = s.strip_prefix("http://") else {
        return Err(BadSpec(format!(
            "--health {s:?}: expected http://localhost:PORT/PATH or tcp:PORT"
        )));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(BadSpec(format!(
            "--health {s:?}: expected http://localhost:PORT/PATH"
        )));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, "")) => (h, None),
            Some((h, p)) => match p.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None => return Err(BadSpec(format!("--health {s:?}: bad host {authority:?}"))),
            },
            None => return Err(BadSpec(format!("--health {s:?}: bad host {authority:?}"))),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(BadSpec(format!(
            "--health {s:?}: missing host (use localhost)"
        )));
    }
    let port = match port {
        Some(p) => parse_port(p).map_err(|e| BadSpec(format!("--health {s:?}: {e}")))?,
        None => 80,
    };
    if path.contains(char::is_whitespace) {
        return Err(BadSpec(format!(
            "--health {s:?}: the path must not contain spaces (use %20)"
        )));
    }
    Ok(HealthSpec::Http {
        port,
        path,
        authority: authority.to_string(),
    })
}

/// A `--forward` request: guest port, and the host port if the user fixed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardSpec {
    pub host: Option<u16>,
    pub guest: u16,
}

/// Parse `GUEST` or `HOST:GUEST`.
pub fn parse_forward(s: &str) -> Result<ForwardSpec, BadSpec> {
    let s = s.trim();
    let (host, guest) = match s.split_once(':') {
        Some((h, g)) => (Some(parse_port(h)), g),
        None => (None, s),
    };
    let guest = parse_port(guest).map_err(|e| BadSpec(format!("--forward {s:?}: {e}")))?;
    let host = host
        .transpose()
        .map_err(|e| BadSpec(format!("--forward {s:?}: {e}")))?;
    Ok(ForwardSpec { host, guest })
}

fn parse_port(s: &str) -> Result<u16, BadSpec> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(BadSpec(format!("{s:?} is not a TCP port (1-65535)"))),
        Ok(p) => Ok(p),
    }
}

/// Merge explicit forwards with the ports the checks need, one entry per guest port (an
/// explicit `HOST:GUEST` wins over an automatic one).
pub fn merge_forwards(explicit: &[ForwardSpec], auto_guest_ports: &[u16]) -> Vec<ForwardSpec> {
    let mut out: Vec<ForwardSpec> = Vec::new();
    let wanted = explicit.iter().copied().chain(
        auto_guest_ports
            .iter()
            .map(|&guest| ForwardSpec { host: None, guest }),
    );
    for f in wanted {
        match out.iter_mut().find(|o| o.guest == f.guest) {
            Some(o) => {
                if o.host.is_none() {
                    o.host = f.host;
                }
            }
            None => out.push(f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_specs() {
        assert_eq!(
            parse_health("http://localhost:8080/hello/index.html").unwrap(),
            HealthSpec::Http {
                port: 8080,
                path: "/hello/index.html".into(),
                authority: "localhost:8080".into()
            }
        );
        assert_eq!(
            parse_health("http://localhost:8080").unwrap(),
            HealthSpec::Http {
                port: 8080,
                path: "/".into(),
                authority: "localhost:8080".into()
            }
        );
        assert_eq!(
            parse_health("http://guest/").unwrap(),
            HealthSpec::Http {
                port: 80,
                path: "/".into(),
                authority: "guest".into()
            }
        );
        assert_eq!(
            parse_health("http://127.0.0.1:80?x=1").unwrap(),
            HealthSpec::Http {
                port: 80,
                path: "/?x=1".into(),
                authority: "127.0.0.1:80".into()
            }
        );
        assert_eq!(parse_health("http://[::1]:81/a").unwrap().guest_port(), 81);
        assert_eq!(parse_health("http://[::1]/a").unwrap().guest_port(), 80);
        assert_eq!(
            parse_health("http://localhost:8080/x").unwrap().to_string(),
            "http://localhost:8080/x"
        );
    }

    #[test]
    fn tcp_specs() {
        assert_eq!(
            parse_health("tcp:22").unwrap(),
            HealthSpec::Tcp { port: 22 }
        );
        assert_eq!(parse_health("tcp:22").unwrap().to_string(), "tcp:22");
    }

    #[test]
    fn bad_specs() {
        for bad in [
            "tcp:0",
            "tcp:x",
            "tcp:70000",
            "https://localhost/",
            "localhost:8080",
            "ftp://x/",
            "http://",
            "http://localhost:abc/",
            "http://:80/",
            "http://u@h/",
            "http://h/a b",
        ] {
            assert!(parse_health(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn forwards() {
        assert_eq!(
            parse_forward("8080").unwrap(),
            ForwardSpec {
                host: None,
                guest: 8080
            }
        );
        assert_eq!(
            parse_forward("18080:8080").unwrap(),
            ForwardSpec {
                host: Some(18080),
                guest: 8080
            }
        );
        for bad in ["", "0", "a:80", "80:", "1:2:3", "99999"] {
            assert!(parse_forward(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn merge_dedups_by_guest_port() {
        let explicit = [
            ForwardSpec {
                host: None,
                guest: 22,
            },
            ForwardSpec {
                host: Some(9000),
                guest: 8080,
            },
        ];
        let merged = merge_forwards(&explicit, &[8080, 22, 5432]);
        assert_eq!(
            merged,
            vec![
                ForwardSpec {
                    host: None,
                    guest: 22
                },
                ForwardSpec {
                    host: Some(9000),
                    guest: 8080
                },
                ForwardSpec {
                    host: None,
                    guest: 5432
                },
            ]
        );
    }
}
