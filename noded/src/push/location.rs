//! Where a registry's `Location` points: an upload's ([`upload_url`]), kept on the registry's
//! own scheme and authority, or a redirect's ([`resolve`]).

/// Why a `Location` is not where an upload goes.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadUrl {
    /// Absent, empty or not a URL.
    Unusable,
    /// On another scheme or authority than the registry's.
    Elsewhere,
}

/// The scheme and authority of `url`, lower case, as written (userinfo and port included).
pub fn origin(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    Some((scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

/// The absolute URL of `location` (absolute, protocol-relative, absolute-path or relative),
/// answered to a request for `base`; `None` when it is none.
pub fn resolve(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    let (scheme, authority) = origin(base)?;
    if location.is_empty() || location.contains(char::is_whitespace) {
        return None;
    }
    let absolute = location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    });
    Some(if absolute {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        // Relative to the base URL's directory.
        let path = base.split('?').next()?;
        let directory = &path[..=path.rfind('/')?];
        format!("{directory}{location}")
    })
}

/// Where to `PUT` a monolithic upload: the `Location` a `POST` to `post_url` answered, with
/// `digest` added to its query. Only on the registry's own scheme and authority: the upload
/// carries the registry's credentials, and a registry must not point noded (inside the
/// cluster's network) at another server.
pub fn upload_url(post_url: &str, location: &str, digest: &str) -> Result<String, UploadUrl> {
    let mut url = resolve(post_url, location).ok_or(UploadUrl::Unusable)?;
    // Compared as written: userinfo (`r@other`) or another port is another authority.
    if origin(&url) != origin(post_url) {
        return Err(UploadUrl::Elsewhere);
    }
    let encoded = digest.replace(':', "%3A");
    let separator = match url.find('?') {
        None => "?",
        Some(at) if at + 1 == url.len() || url.ends_with('&') => "",
        Some(_) => "&",
    };
    url.push_str(separator);
    url.push_str("digest=");
    url.push_str(&encoded);
    Ok(url)
}
