//! Image references, `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, parsed and normalised the way the
//! runtimes resolve them, so that two spellings of one image compare equal: a default or
//! legacy Docker Hub host, `library/` left out, upper-case host letters, HTTPS's default port,
//! an IPv6 address written another way. The controller's webhook compares pod images with
//! push registries' checkpoint repositories through it, and noded names pushed images with it.
//! [`Spelling`] cuts a reference as written, for whoever must keep its spelling or read it as
//! leniently as a runtime might.

use std::net::Ipv6Addr;

use crate::names;

/// The registry a reference without a host names (Docker Hub), as runtimes normalise it.
pub const DOCKER_HUB: &str = "docker.io";
/// Other names of Docker Hub's registry that runtimes and users write.
const DOCKER_HUB_ALIASES: [&str; 2] = ["index.docker.io", "registry-1.docker.io"];
/// The loopback hosts, normalised, that name the node-local registry: the runtime pulls from
/// the node itself.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];
/// The port of an HTTPS registry named without one.
const HTTPS_PORT: u16 = 443;
/// Where Docker Hub keeps images named by one path component (`busybox`).
const OFFICIAL_PREFIX: &str = "library/";
/// A reference's name (host and path) is at most this long (distribution's limit).
const MAX_NAME: usize = 255;
const MAX_TAG: usize = 128;

/// A normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Lower case, Docker Hub's aliases as [`DOCKER_HUB`], without `:443`, an IPv6 address
    /// canonical in brackets (an IPv4-mapped one as IPv4).
    pub host: String,
    /// Path components, `library/` added for a one-component Docker Hub name.
    pub repository: String,
    pub tag: Option<String>,
    /// `ALGORITHM:ENCODED`.
    pub digest: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RefError {
    #[error("an empty image reference")]
    Empty,
    #[error("{0:?} is not a registry host (HOST[:PORT], an IPv6 address in brackets)")]
    Host(String),
    #[error("{0:?} is not an image path (lowercase letters, digits and . _ - between slashes)")]
    Path(String),
    #[error("{0:?} is not a tag (at most {MAX_TAG} letters, digits and . _ -)")]
    Tag(String),
    #[error("{0:?} is not a digest (ALGORITHM:ENCODED)")]
    Digest(String),
    #[error("the name is longer than {MAX_NAME} characters")]
    TooLong,
}

impl ImageRef {
    /// Parses and normalises `reference`.
    pub fn parse(reference: &str) -> Result<Self, RefError> {
        if reference.is_empty() {
            return Err(RefError::Empty);
        }
        let Spelling {
            host,
            path,
            tag,
            digest,
            ..
        } = Spelling::of(reference);
        let digest = digest.map(parse_digest).transpose()?;
        let tag = tag.map(parse_tag).transpose()?;
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(RefError::Path(path.to_owned()));
        }
        let host = match host {
            Some(host) => normalise_host(host)?,
            None => DOCKER_HUB.to_owned(),
        };
        let repository = if host == DOCKER_HUB && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path.to_owned()
        };
        if host.len() + 1 + repository.len() > MAX_NAME {
            return Err(RefError::TooLong);
        }
        Ok(Self {
            host,
            repository,
            tag,
            digest,
        })
    }

    /// `HOST/REPOSITORY`, normalised.
    pub fn name(&self) -> String {
        format!("{}/{}", self.host, self.repository)
    }

    /// The host without its port, and the port ([`HTTPS_PORT`] when it names none).
    pub fn host_and_port(&self) -> (&str, u16) {
        match self.host.rsplit_once(':') {
            Some((host, port)) if !port.ends_with(']') => {
                (host, port.parse().unwrap_or(HTTPS_PORT))
            }
            _ => (&self.host, HTTPS_PORT),
        }
    }

    /// Its digest when a SHA-256 one ([`sha256`]).
    pub fn sha256(&self) -> Option<&str> {
        sha256(self.digest.as_deref())
    }

    /// Whether the image lies in the node-local registry serving on loopback at `port`.
    pub fn is_node_local(&self, port: u16) -> bool {
        let (host, on) = self.host_and_port();
        LOOPBACK_HOSTS.contains(&host) && on == port
    }

    /// Whether the image lies in repository `repository` of `host` (both normalised) or beneath
    /// it: `r.example.com/team` holds `r.example.com/team` and `r.example.com/team/x`, not
    /// `r.example.com/teams`.
    pub fn is_under(&self, host: &str, repository: &str) -> bool {
        self.host == host
            && (repository.is_empty()
                || self.repository == repository
                || self
                    .repository
                    .strip_prefix(repository)
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = RefError;

    fn from_str(s: &str) -> Result<Self, RefError> {
        Self::parse(s)
    }
}

/// A reference cut into its parts as written, unchecked and not normalised: to keep a
/// reference's own spelling, or to read one as leniently as some runtime might (failing closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spelling<'a> {
    /// `[HOST/]PATH`: the reference without tag and digest.
    pub name: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

impl<'a> Spelling<'a> {
    pub fn of(reference: &'a str) -> Self {
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => (rest, Some(digest)),
            None => (reference, None),
        };
        let (host, after_host) = split_host(rest);
        // The tag follows the last ':' after the host, if no '/' comes after it.
        let (path, tag) = match after_host.rsplit_once(':') {
            Some((path, tag)) if !tag.contains('/') => (path, Some(tag)),
            _ => (after_host, None),
        };
        let name = &rest[..rest.len() - tag.map_or(0, |t| t.len() + 1)];
        Self {
            name,
            host,
            path,
            tag,
            digest,
        }
    }

    /// Its digest when a SHA-256 one ([`sha256`]).
    pub fn sha256(&self) -> Option<&'a str> {
        sha256(self.digest)
    }

    /// The port its host names, read as a number whatever the host's spelling: only the port
    /// tells the node-local registry's spellings (`localhost`, `127.0.0.1`, a name that
    /// resolves to loopback …) apart from another registry.
    pub fn port(&self) -> Option<u16> {
        let (_, port) = self.host?.rsplit_once(':')?;
        port.parse().ok()
    }
}

/// `digest` when it is `sha256:` and 64 lower-case hex digits: how checkpoint images are
/// named, and all noded serves.
fn sha256(digest: Option<&str>) -> Option<&str> {
    names::parse_digest(digest?)
}

/// The host part of `name` and the rest. As the runtimes read it, the first component is a
/// host only if it has a dot or a port, is `localhost`, or has upper-case letters (which no
/// path may have); otherwise the name is Docker Hub's.
fn split_host(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':', '['])
                || first == "localhost"
                || first.bytes().any(|b| b.is_ascii_uppercase()) =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

/// `HOST[:PORT]` normalised: lower case, Docker Hub's aliases as [`DOCKER_HUB`], `:443` (the
/// port every runtime uses for an HTTPS registry without one) dropped, leading zeros of a port
/// dropped, an IPv6 address canonical in brackets and an IPv4-mapped one as IPv4.
pub fn normalise_host(host: &str) -> Result<String, RefError> {
    let bad = || RefError::Host(host.to_owned());
    let (address, port) = if let Some(inner) = host.strip_prefix('[') {
        let (address, after) = inner.split_once(']').ok_or_else(bad)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(bad)?),
        };
        let ip: Ipv6Addr = address.parse().map_err(|_| bad())?;
        let shown = match ip.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("[{ip}]"),
        };
        (shown, port)
    } else {
        let (address, port) = match host.split_once(':') {
            Some((address, port)) => (address, Some(port)),
            None => (host, None),
        };
        let address = address.to_ascii_lowercase();
        if !valid_domain(&address) {
            return Err(bad());
        }
        (address, port)
    };
    let port = match port {
        None => None,
        Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => return Err(bad()),
        Some(p) => match p.trim_start_matches('0').parse::<u16>() {
            Ok(HTTPS_PORT) => None,
            Ok(0) | Err(_) => return Err(bad()),
            Ok(port) => Some(port),
        },
    };
    let address = if DOCKER_HUB_ALIASES.contains(&address.as_str()) {
        DOCKER_HUB.to_owned()
    } else {
        address
    };
    Ok(match port {
        Some(port) => format!("{address}:{port}"),
        None => address,
    })
}

/// A domain name or an IPv4 address: labels of letters, digits and inner hyphens (lower case
/// here), between single dots.
fn valid_domain(address: &str) -> bool {
    !address.is_empty()
        && address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// One path component: lower-case letters and digits, `.`, `_` and `-` inside.
fn valid_component(component: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            alnum(first) && alnum(last) && bytes.iter().all(|&b| alnum(b) || b"._-".contains(&b))
        }
        _ => false,
    }
}

fn parse_tag(tag: &str) -> Result<String, RefError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = tag.len() <= MAX_TAG
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    valid
        .then(|| tag.to_owned())
        .ok_or_else(|| RefError::Tag(tag.to_owned()))
}

fn parse_digest(digest: &str) -> Result<String, RefError> {
    let valid = digest.split_once(':').is_some_and(|(algorithm, encoded)| {
        !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
            && !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
    });
    valid
        .then(|| digest.to_owned())
        .ok_or_else(|| RefError::Digest(digest.to_owned()))
}

#[cfg(test)]
mod tests;
