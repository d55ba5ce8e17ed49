//! Free host ports for the forwards: bind 127.0.0.1:0 to get one, hold the listeners until just
//! before QEMU starts, then release them for QEMU's hostfwd.

use super::qemu::PortForward;
use super::spec::ForwardSpec;
use anyhow::{bail, Result};
use std::net::{Ipv4Addr, TcpListener};

/// Host ports held open until [`Reservation::release`].
pub struct Reservation {
    pub forwards: Vec<PortForward>,
    listeners: Vec<TcpListener>,
}

impl Reservation {
    /// Drop the listeners so QEMU can bind the ports.
    pub fn release(self) -> Vec<PortForward> {
        drop(self.listeners);
        self.forwards
    }
}

/// Reserve a host port for each forward (a fixed `HOST:GUEST` port must be free).
pub fn reserve(specs: &[ForwardSpec]) -> Result<Reservation> {
    let mut forwards = Vec::new();
    let mut listeners = Vec::new();
    for s in specs {
        let l = match TcpListener::bind((Ipv4Addr::LOCALHOST, s.host.unwrap_or(0))) {
            Ok(l) => l,
            Err(e) => match s.host {
                Some(h) => bail!("--forward {h}:{}: host port {h} is not free ({e})", s.guest),
                None => bail!("cannot bind a free port on 127.0.0.1: {e}"),
            },
        };
        forwards.push(PortForward {
            guest: s.guest,
            host: l.local_addr()?.port(),
        });
        listeners.push(l);
    }
    Ok(Reservation {
        forwards,
        listeners,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_distinct_free_ports_and_releases_them() {
        let specs = [
            ForwardSpec {
                host: None,
                guest: 8080,
            },
            ForwardSpec {
                host: None,
                guest: 22,
            },
        ];
        let r = reserve(&specs).unwrap();
        let (a, b) = (r.forwards[0].host, r.forwards[1].host);
        assert_ne!(a, b);
        assert_eq!(r.forwards[0].guest, 8080);
        assert!(
            TcpListener::bind(("127.0.0.1", a)).is_err(),
            "held while reserved"
        );
        let f = r.release();
        assert_eq!(f.len(), 2);
        TcpListener::bind(("127.0.0.1", a)).expect("free after release");
    }

    #[test]
    fn fixed_port_in_use_is_an_error() {
        let busy = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let err = reserve(&[ForwardSpec {
            host: Some(port),
            guest: 80,
        }])
        .err()
        .unwrap();
        assert!(err.to_string().contains("is not free"), "{err}");
    }
}
