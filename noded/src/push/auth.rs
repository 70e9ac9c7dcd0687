//! Registry credentials (from a `kubernetes.io/dockerconfigjson` Secret), `WWW-Authenticate`
//! challenges and the bearer tokens a push is given, cached.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use base64::Engine as _;
use checkpointing::reference::normalise_host;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug output lands in logs: the password never does.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What is wrong with a docker config. Never carries any of its secret material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("the docker config is not JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("the docker config has no \"auths\" object")]
    NoAuths,
    #[error("the docker config entry for {key:?} is not an object")]
    Entry { key: String },
    #[error("the \"auth\" of the docker config entry for {key:?} is not base64")]
    Base64 { key: String },
    #[error("the decoded \"auth\" of the docker config entry for {key:?} is not UTF-8")]
    Utf8 { key: String },
    #[error(
        "the decoded \"auth\" of the docker config entry for {key:?} has no ':' between user name and password"
    )]
    NoColon { key: String },
    #[error(
        "the docker config entry for {key:?} has neither \"auth\" nor \"username\" and \"password\""
    )]
    Missing { key: String },
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The credentials for `host` in a docker config (`{"auths": {KEY: …}}`); `Ok(None)` when
    /// no entry is for `host`. An exact KEY wins over one with a scheme or path.
    pub fn from_docker_config(
        json: &[u8],
        host: &str,
    ) -> Result<Option<Credentials>, CredentialsError> {
        let config: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| CredentialsError::Json {
                line: e.line(),
                column: e.column(),
            })?;
        let auths = config
            .get("auths")
            .and_then(|a| a.as_object())
            .ok_or(CredentialsError::NoAuths)?;
        let entry = auths
            .iter()
            .find(|(key, _)| key.as_str() == host)
            .or_else(|| auths.iter().find(|(key, _)| key_matches(key, host)));
        let Some((key, entry)) = entry else {
            return Ok(None);
        };
        let key = key.clone();
        let entry = entry
            .as_object()
            .ok_or_else(|| CredentialsError::Entry { key: key.clone() })?;
        let text = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let auth = text("auth");
        if !auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|_| CredentialsError::Base64 { key: key.clone() })?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| CredentialsError::Utf8 { key: key.clone() })?;
            let (username, password) = decoded
                .split_once(':')
                .ok_or(CredentialsError::NoColon { key })?;
            return Ok(Some(Self::new(username, password)));
        }
        match (text("username"), text("password")) {
            ("", _) | (_, "") => Err(CredentialsError::Missing { key }),
            (username, password) => Ok(Some(Self::new(username, password))),
        }
    }
}

impl Credentials {
    /// `Basic base64(user:password)`, marked sensitive so that it is not logged.
    pub(super) fn basic(&self) -> HeaderValue {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", self.username, self.password));
        sensitive(format!("Basic {encoded}"))
    }

    /// Tells cached tokens of different credentials apart without keeping the password.
    fn fingerprint(&self) -> String {
        checkpointing::digest::sha256_hex(format!("{}:{}", self.username, self.password).as_bytes())
    }
}

/// Whether a docker config KEY names `host` (normalised): `host`, or `https://host` or
/// `http://host` with an optional `/`, `/v1/` or `/v2/` path, the host spelled in any way image
/// references may spell it (`https://index.docker.io/v1/` is Docker Hub's).
fn key_matches(key: &str, host: &str) -> bool {
    let same = |authority: &str| normalise_host(authority).is_ok_and(|a| a == host);
    let Some(rest) = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
    else {
        return same(key);
    };
    let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
    ["", "/", "/v1", "/v1/", "/v2", "/v2/"].contains(&path) && same(authority)
}

pub(super) fn sensitive(value: String) -> HeaderValue {
    let mut value =
        HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    value.set_sensitive(true);
    value
}

/// One challenge of a `WWW-Authenticate` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The first usable challenge of a `WWW-Authenticate` value (`Scheme k=v, k="v, w", …`, possibly
/// several challenges); `None` when there is none (unknown scheme, Bearer without realm).
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let mut challenges: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if rest.is_empty() {
            break;
        }
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        rest = &rest[end..];
        let after = rest.trim_start();
        let Some(value) = after.strip_prefix('=') else {
            // A token not followed by '=' starts the next challenge.
            challenges.push((token.to_ascii_lowercase(), Vec::new()));
            continue;
        };
        let value = value.trim_start();
        let (value, remaining) = if let Some(quoted) = value.strip_prefix('"') {
            let mut out = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next().map(|(_, c)| c)),
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => out.push(c),
                }
            }
            (out, &quoted[end..])
        } else {
            let end = value.find(',').unwrap_or(value.len());
            (value[..end].trim().to_owned(), &value[end..])
        };
        rest = remaining;
        if let Some((_, params)) = challenges.last_mut() {
            params.push((token.to_ascii_lowercase(), value));
        }
    }
    challenges.into_iter().find_map(|(scheme, params)| {
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        match scheme.as_str() {
            "basic" => Some(Challenge::Basic),
            "bearer" => Some(Challenge::Bearer {
                realm: param("realm").filter(|r| !r.is_empty())?,
                service: param("service"),
            }),
            _ => None,
        }
    })
}

/// `s` with everything but RFC 3986's unreserved characters percent-encoded, for a query.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether noded may send credentials to token endpoint `realm`: over HTTPS, or plain HTTP
/// to a host listed insecure (normalised `insecure_hosts`) as registries are. A registry
/// names its realm, and may name any server; the credentials must not cross the network in
/// the clear.
pub fn realm_allowed(realm: &str, insecure_hosts: &[String]) -> bool {
    let Some((scheme, rest)) = realm.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') {
        return false;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        "http" => normalise_host(authority).is_ok_and(|a| insecure_hosts.contains(&a)),
        _ => false,
    }
}

/// The token endpoint's URL for `repository` and `actions` (`pull,push`, `delete`).
pub fn token_url(realm: &str, service: Option<&str>, repository: &str, actions: &str) -> String {
    let separator = if realm.contains('?') { '&' } else { '?' };
    let mut url = format!("{realm}{separator}");
    if let Some(service) = service {
        url.push_str(&format!("service={}&", url_encode(service)));
    }
    url.push_str(&format!(
        "scope={}",
        url_encode(&format!("repository:{repository}:{actions}"))
    ));
    url
}

/// The token in a token endpoint's JSON answer, and how long it is valid (60 s unless said).
pub fn parse_token(body: &[u8]) -> Option<(String, Duration)> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    let token = ["token", "access_token"]
        .into_iter()
        .filter_map(|k| answer.get(k).and_then(|t| t.as_str()))
        .find(|t| !t.is_empty())?
        .to_owned();
    let lifetime = answer
        .get("expires_in")
        .and_then(|e| e.as_u64())
        .filter(|e| *e > 0)
        .unwrap_or(60);
    Some((token, Duration::from_secs(lifetime)))
}

/// Which authorization a request to a repository gets: what one registry asked for before.
#[derive(Clone, Debug)]
enum Cached {
    Basic,
    Bearer { token: String, until: Instant },
}

/// Authorizations by (host, repository, actions, credentials), so that a push fetches one
/// token rather than one per request.
#[derive(Debug, Default)]
pub struct Cache(Mutex<HashMap<(String, String, String, String), Cached>>);

pub struct Scope<'a> {
    pub host: &'a str,
    pub repository: &'a str,
    pub actions: &'static str,
    pub credentials: Option<&'a Credentials>,
}

impl Scope<'_> {
    fn key(&self) -> (String, String, String, String) {
        (
            self.host.to_owned(),
            self.repository.to_owned(),
            self.actions.to_owned(),
            self.credentials
                .map(Credentials::fingerprint)
                .unwrap_or_default(),
        )
    }
}

impl Cache {
    /// The `Authorization` to send for `scope`, if a registry asked for one and it is valid.
    pub fn get(&self, scope: &Scope<'_>) -> Option<HeaderValue> {
        let cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(&scope.key())? {
            Cached::Basic => scope.credentials.map(Credentials::basic),
            Cached::Bearer { token, until } if *until > Instant::now() => {
                Some(sensitive(format!("Bearer {token}")))
            }
            Cached::Bearer { .. } => None,
        }
    }

    pub fn basic(&self, scope: &Scope<'_>) {
        self.insert(scope, Cached::Basic);
    }

    /// Keeps `token` until shortly before it expires, so that no request carries one that
    /// expires on the way.
    pub fn bearer(&self, scope: &Scope<'_>, token: String, lifetime: Duration) {
        let margin = (lifetime / 5).min(Duration::from_secs(30));
        let until = Instant::now() + lifetime - margin;
        self.insert(scope, Cached::Bearer { token, until });
    }

    pub fn forget(&self, scope: &Scope<'_>) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        cache.remove(&scope.key());
    }

    fn insert(&self, scope: &Scope<'_>, cached: Cached) {
        let mut cache = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Expired tokens go here, so that the cache does not grow with every repository.
        let now = Instant::now();
        cache.retain(|_, c| !matches!(c, Cached::Bearer { until, .. } if *until <= now));
        cache.insert(scope.key(), cached);
    }
}

#[cfg(test)]
mod tests;
