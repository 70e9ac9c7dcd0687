//! The registry's route grammar: which request paths name a repository, manifest or blob.
//! Pure; every component is checked against the strict grammar of what it names.

use checkpointing::names::parse_digest;

use crate::images::Repo;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    /// `sha256:<64 lowercase hex>`.
    Digest(String),
    Tag(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`: API version check.
    Base,
    Manifest {
        repo: Repo,
        reference: Reference,
    },
    Blob {
        repo: Repo,
        digest: String,
    },
}

impl Route {
    /// What the route serves, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Base => "base",
            Self::Manifest { .. } => "manifest",
            Self::Blob { .. } => "blob",
        }
    }
}

/// The route of a request path, `None` for anything else. Every component is checked against
/// the strict grammar of what it names, so nothing like `..`, `%2e`, an empty segment or an
/// unknown digest algorithm gets through.
pub fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    let [namespace, name, kind, reference] = parts[..] else {
        return None;
    };
    let repo = Repo::parse(namespace, name)?;
    match kind {
        "manifests" => Some(Route::Manifest {
            repo,
            reference: parse_reference(reference)?,
        }),
        "blobs" => Some(Route::Blob {
            repo,
            digest: parse_digest(reference)?.to_owned(),
        }),
        _ => None,
    }
}

fn parse_reference(s: &str) -> Option<Reference> {
    if s.contains(':') {
        return parse_digest(s).map(|d| Reference::Digest(d.to_owned()));
    }
    // The distribution spec's tag grammar: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
    let ok = !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    ok.then(|| Reference::Tag(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn repo(ns: &str, name: &str) -> Repo {
        Repo {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn routes_parse_and_hostile_paths_do_not() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(
            route(&format!(
                "/v2/default/counter-checkpoint/manifests/{}",
                digest('a')
            )),
            Some(Route::Manifest {
                repo: repo("default", "counter-checkpoint"),
                reference: Reference::Digest(digest('a')),
            })
        );
        assert_eq!(
            route("/v2/default/a.b/manifests/latest"),
            Some(Route::Manifest {
                repo: repo("default", "a.b"),
                reference: Reference::Tag("latest".into()),
            })
        );
        assert_eq!(
            route(&format!("/v2/ns/name/blobs/{}", digest('0'))),
            Some(Route::Blob {
                repo: repo("ns", "name"),
                digest: digest('0'),
            })
        );
        let long = "a".repeat(64);
        for hostile in [
            "/v2/../x".to_owned(),
            "/v2/../../etc/manifests/passwd".into(),
            "/v2/default/../manifests/latest".into(),
            "/v2/default/%2e%2e/manifests/latest".into(),
            "/v2/default//manifests/latest".into(),
            "/v2/Default/x/manifests/latest".into(),
            format!("/v2/{long}/x/manifests/latest"),
            "/v2/-ns/x/manifests/latest".into(),
            "/v2/ns/x./manifests/latest".into(),
            "/v2/ns/x/manifests/..".into(),
            "/v2/ns/x/manifests/".into(),
            "/v2/ns/x/manifests/sha256:abc".into(),
            format!("/v2/ns/x/manifests/sha256:{}", "A".repeat(64)),
            format!("/v2/ns/x/manifests/sha512:{}", "a".repeat(128)),
            format!("/v2/ns/x/blobs/{}/extra", digest('a')),
            "/v2/ns/x/blobs/latest".into(),
            format!("/v2/ns/x/tags/{}", digest('a')),
            format!("/v2/a/b/c/manifests/{}", digest('a')),
            "/v3/".into(),
            "/v2x".into(),
            "".into(),
            format!("/v2/ns/x/manifests/{}", "t".repeat(129)),
        ] {
            assert_eq!(route(&hostile), None, "{hostile}");
        }
    }
}
