//! Health probes against the forwarded host ports. Each returns Ok on healthy, or Err with a
//! short description of what it saw last (used in the timeout message).
//!
//! Note: QEMU's user-mode network accepts a connection on a forwarded port even when nothing
//! listens in the guest, so a bare TCP connect proves nothing; the probes need an answer.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Not healthy (yet): what the probe saw last, for the timeout message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

impl From<String> for Unhealthy {
    fn from(s: String) -> Unhealthy {
        Unhealthy(s)
    }
}

impl From<&str> for Unhealthy {
    fn from(s: &str) -> Unhealthy {
        Unhealthy(s.to_string())
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(4);

fn connect(host_port: u16) -> Result<TcpStream, Unhealthy> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, host_port));
    let s =
        TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| Unhealthy(short_io(&e)))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| Unhealthy(short_io(&e)))?;
    s.set_write_timeout(Some(IO_TIMEOUT))
        .map_err(|e| Unhealthy(short_io(&e)))?;
    Ok(s)
}

fn short_io(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset (nothing listening on that guest port?)".into(),
        WouldBlock | TimedOut => "no answer (timed out)".into(),
        _ => e.to_string(),
    }
}

/// The HTTP/1.1 request bakery sends.
pub fn http_request(authority: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: bakery-boot\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// The status code of an HTTP response's first line (`HTTP/1.x NNN ...`).
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end();
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// GET through the forwarded port; 2xx is healthy.
pub fn http(host_port: u16, authority: &str, path: &str) -> Result<u16, Unhealthy> {
    let mut s = connect(host_port)?;
    s.write_all(http_request(authority, path).as_bytes())
        .map_err(|e| Unhealthy(short_io(&e)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.contains(&b'\n') && head.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => {
                if head.is_empty() {
                    return Err(Unhealthy(short_io(&e)));
                }
                break;
            }
        }
    }
    if head.is_empty() {
        return Err(
            "connection closed without a response (nothing listening in the guest yet?)".into(),
        );
    }
    match parse_status_line(&head) {
        Some(code) if (200..300).contains(&code) => Ok(code),
        Some(code) => Err(Unhealthy(format!("HTTP {code}"))),
        None => Err("not an HTTP response".into()),
    }
}

/// TCP connect that also receives at least one byte (a banner, e.g. `SSH-2.0-...`).
pub fn tcp_banner(host_port: u16) -> Result<(), Unhealthy> {
    let mut s = connect(host_port)?;
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1..) => Ok(()),
        Ok(0) => {
            Err("connection closed without a banner (nothing listening in the guest yet?)".into())
        }
        Err(e) => Err(Unhealthy(format!("no banner: {}", short_io(&e)))),
    }
}

/// The ssh arguments for running `cmd` as root in the guest.
pub fn ssh_args(private_key: &Path, host_port: u16, cmd: &str) -> Vec<String> {
    vec![
        "-i".into(),
        private_key.to_string_lossy().into_owned(),
        "-p".into(),
        host_port.to_string(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "ConnectTimeout=5".into(),
        "root@127.0.0.1".into(),
        "--".into(),
        cmd.into(),
    ]
}

/// Run `cmd` in the guest over ssh; exit 0 is healthy. Killed after `limit`.
pub fn ssh_cmd(
    private_key: &Path,
    host_port: u16,
    cmd: &str,
    limit: Duration,
) -> Result<(), Unhealthy> {
    let mut child = Command::new("ssh")
        .args(ssh_args(private_key, host_port, cmd))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Unhealthy(format!("cannot run ssh: {e}")))?;
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => {
                if st.success() {
                    return Ok(());
                }
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                let err = err.trim().lines().last().unwrap_or("").to_string();
                return Err(Unhealthy(format!(
                    "--health-cmd over ssh: {st}{}",
                    if err.is_empty() {
                        String::new()
                    } else {
                        format!(": {err}")
                    }
                )));
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Unhealthy(format!(
                    "--health-cmd over ssh: still running after {}s",
                    limit.as_secs()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK\r\nServer: x\r\n"),
            Some(200)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status_line(b"HTTP/1.1 204\r\n"), Some(204));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 x\r\n"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn request_text() {
        assert_eq!(
            http_request("localhost:8080", "/a?b"),
            "GET /a?b HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: bakery-boot\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
    }

    /// A one-shot server answering `reply` to the first connection.
    fn serve(reply: &'static [u8], read_request: bool) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 512];
            if read_request {
                let _ = s.read(&mut buf);
            }
            let _ = s.write_all(reply);
        });
        port
    }

    #[test]
    fn http_probe() {
        let ok = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", true);
        assert_eq!(http(ok, "h", "/"), Ok(200));
        let not_found = serve(b"HTTP/1.1 404 Not Found\r\n\r\n", true);
        assert_eq!(http(not_found, "h", "/"), Err("HTTP 404".into()));
        let e = http(serve(b"", true), "h", "/").unwrap_err();
        assert!(e.0.contains("closed without a response"), "{e}");
        // a closed port
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert_eq!(http(port, "h", "/"), Err("connection refused".into()));
    }

    #[test]
    fn banner_probe() {
        assert_eq!(tcp_banner(serve(b"SSH-2.0-OpenSSH_9.2\r\n", false)), Ok(()));
        assert!(tcp_banner(serve(b"", false))
            .unwrap_err()
            .0
            .contains("without a banner"));
    }

    #[test]
    fn ssh_command_line() {
        let a = ssh_args(
            Path::new("/k/id_ed25519"),
            40022,
            "systemctl is-active tomcat10",
        );
        let j = a.join(" ");
        assert!(
            j.starts_with("-i /k/id_ed25519 -p 40022 -o BatchMode=yes"),
            "{j}"
        );
        assert!(j.ends_with("root@127.0.0.1 -- systemctl is-active tomcat10"));
    }
}
