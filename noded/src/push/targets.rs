//! Which registries a request may have noded push to, and which addresses noded may reach for
//! them. A request names its repository, and noded (on the node's network, next to the
//! kubelet, the node's own services and the cloud's metadata service) does the connecting: a
//! tenant must not aim it at what only the node can reach. The cluster's own
//! `--push-registry` is the admin's choice and reached wherever it is; every other host must
//! be on `--allowed-push-registry` when that is set, and must resolve to no loopback,
//! link-local or unspecified address (nor a private one with `--refuse-private-push-targets`).
//! Checked up front, before a dump, and again for every connection (DNS may answer otherwise
//! the second time), the token endpoint's included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Loopback,
    LinkLocal,
    /// `0.0.0.0/8` and `::`, which reach the node itself.
    Unspecified,
    /// RFC 1918 and unique local (`fc00::/7`) addresses.
    Private,
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Loopback => "loopback",
            Self::LinkLocal => "link-local",
            Self::Unspecified => "unspecified",
            Self::Private => "private",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "push target {host} refused: not a registry this cluster allows pushing to (noded's \
         --allowed-push-registry)"
    )]
    NotAllowed { host: String },
    #[error(
        "push target {host} refused: it resolves to {address}, a {class} address; noded pushes \
         only to registries off the node itself and its link-local network{}",
        if *class == Class::Private { " (and off private networks: --refuse-private-push-targets)" } else { "" }
    )]
    Address {
        host: String,
        address: IpAddr,
        class: Class,
    },
}

/// The class of `ip` that makes it refused, if any; `refuse_private` adds private ones.
pub fn refused_class(ip: IpAddr, refuse_private: bool) -> Option<Class> {
    let class = match ip {
        IpAddr::V4(v4) => class_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => class_v4(v4),
            None => class_v6(v6),
        },
    }?;
    (class != Class::Private || refuse_private).then_some(class)
}

fn class_v4(ip: Ipv4Addr) -> Option<Class> {
    if ip.is_loopback() {
        Some(Class::Loopback)
    } else if ip.is_link_local() {
        Some(Class::LinkLocal)
    } else if ip.octets()[0] == 0 {
        Some(Class::Unspecified)
    } else if ip.is_private() {
        Some(Class::Private)
    } else {
        None
    }
}

fn class_v6(ip: Ipv6Addr) -> Option<Class> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some(Class::Loopback)
    } else if ip.is_unspecified() {
        Some(Class::Unspecified)
    } else if first & 0xffc0 == 0xfe80 {
        Some(Class::LinkLocal)
    } else if first & 0xfe00 == 0xfc00 {
        Some(Class::Private)
    } else {
        None
    }
}

/// The IPv4 address an IPv6 one reaches: IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible
/// (`::a.b.c.d`) or NAT64's well-known prefix (`64:ff9b::a.b.c.d`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compatible || nat64).then_some(low)
}

/// How far noded may reach for one registry host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reach {
    /// The cluster's own registry: anywhere.
    Own,
    /// A request's: addresses checked ([`refused_class`]).
    Checked,
}

/// The policy, from noded's flags. Hosts are normalised (`checkpointing::reference`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Targets {
    /// `--push-registry`'s host.
    pub own: Option<String>,
    /// `--allowed-push-registry`: when not empty, the only hosts but `own`.
    pub allowed: Vec<String>,
    /// `--refuse-private-push-targets`.
    pub refuse_private: bool,
}

impl Targets {
    /// Whether noded may push to `host`, and how far it may reach for it.
    pub fn reach(&self, host: &str) -> Result<Reach, TargetError> {
        if self.own.as_deref() == Some(host) {
            return Ok(Reach::Own);
        }
        if !self.allowed.is_empty() && !self.allowed.iter().any(|a| a == host) {
            return Err(TargetError::NotAllowed {
                host: host.to_owned(),
            });
        }
        Ok(Reach::Checked)
    }

    /// Ok when `host`, resolved to `addresses`, may be reached ([`Reach::Checked`]); the
    /// first refused address otherwise.
    pub fn check(&self, host: &str, addresses: &[IpAddr]) -> Result<(), TargetError> {
        match addresses
            .iter()
            .find_map(|&a| Some((a, refused_class(a, self.refuse_private)?)))
        {
            None => Ok(()),
            Some((address, class)) => Err(TargetError::Address {
                host: host.to_owned(),
                address,
                class,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(ip: &str, refuse_private: bool) -> Option<Class> {
        refused_class(ip.parse().unwrap(), refuse_private)
    }

    #[test]
    fn the_node_and_link_local_services_are_refused_however_written() {
        for (ip, expected) in [
            ("127.0.0.1", Class::Loopback),
            ("127.9.9.9", Class::Loopback),
            ("::1", Class::Loopback),
            ("::ffff:127.0.0.1", Class::Loopback),
            ("::127.0.0.1", Class::Loopback),
            ("169.254.169.254", Class::LinkLocal),
            ("::ffff:169.254.169.254", Class::LinkLocal),
            ("64:ff9b::a9fe:a9fe", Class::LinkLocal),
            ("fe80::1", Class::LinkLocal),
            ("febf::1", Class::LinkLocal),
            ("0.0.0.0", Class::Unspecified),
            ("0.1.2.3", Class::Unspecified),
            ("::", Class::Unspecified),
        ] {
            assert_eq!(class(ip, false), Some(expected), "{ip}");
        }
    }

    #[test]
    fn private_addresses_only_when_asked() {
        for ip in [
            "10.77.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "fc00::1",
            "fd12::1",
            "::ffff:10.0.0.1",
        ] {
            assert_eq!(class(ip, false), None, "{ip}");
            assert_eq!(class(ip, true), Some(Class::Private), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "2001:db8::1",
            "100.64.0.1",
            "fec0::1",
        ] {
            assert_eq!(class(ip, true), None, "{ip}");
        }
    }

    #[test]
    fn the_cluster_registry_is_always_allowed_others_only_when_listed() {
        let open = Targets {
            own: Some("10.77.0.1:5000".into()),
            ..Targets::default()
        };
        assert_eq!(open.reach("10.77.0.1:5000"), Ok(Reach::Own));
        assert_eq!(open.reach("r.example.com"), Ok(Reach::Checked));
        let listed = Targets {
            allowed: vec!["r.example.com".into()],
            ..open.clone()
        };
        assert_eq!(listed.reach("10.77.0.1:5000"), Ok(Reach::Own));
        assert_eq!(listed.reach("r.example.com"), Ok(Reach::Checked));
        let refused = listed.reach("r.example.com:5000").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "push target r.example.com:5000 refused: not a registry this cluster allows \
             pushing to (noded's --allowed-push-registry)"
        );
    }

    #[test]
    fn one_refused_address_among_many_refuses_the_host() {
        let targets = Targets::default();
        let addresses: Vec<IpAddr> = vec![
            "93.184.216.34".parse().unwrap(),
            "127.0.0.1".parse().unwrap(),
        ];
        let refused = targets.check("rebind.example", &addresses).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "push target rebind.example refused: it resolves to 127.0.0.1, a loopback address; \
             noded pushes only to registries off the node itself and its link-local network"
        );
        assert!(targets.check("r.example", &addresses[..1]).is_ok());
        let strict = Targets {
            refuse_private: true,
            ..Targets::default()
        };
        let private = strict
            .check("registry.svc", &["10.96.0.10".parse().unwrap()])
            .unwrap_err();
        assert!(
            private
                .to_string()
                .contains("--refuse-private-push-targets"),
            "{private}"
        );
    }
}
