//! Where images are pushed: the cluster default `--push-registry` ([`Target`]) and the
//! repository one push goes to ([`Destination`]). Both are normalised as image references are
//! ([`ImageRef`]), so that one registry has one name however a request spells it.

use std::str::FromStr;

use checkpointing::reference::{ImageRef, Spelling, normalise_host};

/// `HOST[:PORT][/PREFIX]` of `--push-registry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    /// Repository path before `<namespace>/<name>`, without slashes at its ends; may be empty.
    pub prefix: String,
}

/// `HOST[:PORT]/REPOSITORY`: the repository one image is pushed to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub repository: String,
}

/// Checks `host` of the reference `s` (quoted in the message).
fn check_host(s: &str, host: &str) -> Result<(), String> {
    // Runtimes read the first component of a reference as a registry only if it has a dot
    // or a port, or is localhost; otherwise the image would be looked for on Docker Hub.
    if host.is_empty()
        || !(host.contains('.') || host.contains(':') || host == "localhost")
        || host.contains(|c: char| c.is_whitespace() || c == '@')
    {
        return Err(format!(
            "{s:?}: the registry host must contain a dot or a port, or be localhost"
        ));
    }
    Ok(())
}

/// Lowercase path components `[a-z0-9._-]+` separated by single slashes.
fn valid_repository(path: &str) -> bool {
    path.split('/').all(|c| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    })
}

fn no_scheme(s: &str, what: &str) -> Result<(), String> {
    if s.contains("://") {
        return Err(format!(
            "{s:?}: give {what} without a scheme (insecure registries are configured apart)"
        ));
    }
    Ok(())
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        no_scheme(s, "HOST[:PORT][/PREFIX]")?;
        let (host, prefix) = s.split_once('/').unwrap_or((s, ""));
        check_host(s, host)?;
        if !prefix.is_empty() && !valid_repository(prefix) {
            return Err(format!(
                "{s:?}: the repository prefix must be lowercase path components"
            ));
        }
        Ok(Self {
            host: normalise_host(host).map_err(|e| format!("{s:?}: {e}"))?,
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.prefix)
        }
    }
}

impl Target {
    /// The repository `namespace/name` of a checkpoint lands in, under the prefix.
    pub fn destination(&self, namespace: &str, name: &str) -> Destination {
        let repository = [self.prefix.as_str(), namespace, name]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        Destination {
            host: self.host.clone(),
            repository,
        }
    }
}

impl FromStr for Destination {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        no_scheme(s, "HOST[:PORT]/REPOSITORY")?;
        if !s.contains('/') {
            return Err(format!(
                "{s:?}: give HOST[:PORT]/REPOSITORY, with a repository"
            ));
        }
        check_host(s, Spelling::of(s).host.unwrap_or_default())?;
        let parsed = ImageRef::parse(s).map_err(|e| format!("{s:?}: {e}"))?;
        if parsed.tag.is_some() || parsed.digest.is_some() {
            return Err(format!("{s:?}: give a repository without tag or digest"));
        }
        Ok(Self {
            host: parsed.host,
            repository: parsed.repository,
        })
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.repository)
    }
}

/// `<host>/<repository>@<algorithm>:<hex>`, as [`super::Pusher::push`] names an image.
pub fn parse_image(image: &str) -> Result<(Destination, &str), String> {
    let spelling = Spelling::of(image);
    let digest = spelling
        .digest
        .ok_or_else(|| format!("{image:?} has no @DIGEST"))?;
    if spelling.tag.is_some() {
        return Err(format!("{image:?}: a pushed image is named by digest only"));
    }
    let destination = spelling.name.parse::<Destination>()?;
    let valid_digest = digest.split_once(':').is_some_and(|(algorithm, hex)| {
        !algorithm.is_empty()
            && algorithm.bytes().all(|b| b.is_ascii_alphanumeric())
            && !hex.is_empty()
            && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if !valid_digest {
        return Err(format!("{image:?}: {digest:?} is not a digest"));
    }
    Ok((destination, digest))
}
