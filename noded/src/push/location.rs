//! Where a monolithic upload goes: the `Location` the registry answered, kept on the
//! registry's own scheme and authority.

/// Why a `Location` is not where an upload goes.
#[derive(Debug, PartialEq, Eq)]
pub enum UploadUrl {
    /// Absent, empty or not a URL.
    Unusable,
    /// On another scheme or authority than the registry's.
    Elsewhere,
}

/// Where to `PUT` a monolithic upload: the `Location` a `POST` to `post_url` answered (absolute,
/// absolute-path or relative), with `digest` added to its query. Only on the registry's own
/// scheme and authority: the upload carries the registry's credentials, and a registry must
/// not point noded (inside the cluster's network) at another server.
pub fn upload_url(post_url: &str, location: &str, digest: &str) -> Result<String, UploadUrl> {
    let location = location.trim();
    let origin = |url: &str| {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        Some((scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
    };
    let (scheme, authority) = origin(post_url).ok_or(UploadUrl::Unusable)?;
    if location.is_empty() || location.contains(char::is_whitespace) {
        return Err(UploadUrl::Unusable);
    }
    let absolute = location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    });
    let mut url = if absolute {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{scheme}://{rest}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        // Relative to the POST URL's directory.
        let path = post_url.split('?').next().ok_or(UploadUrl::Unusable)?;
        let directory = &path[..=path.rfind('/').ok_or(UploadUrl::Unusable)?];
        format!("{directory}{location}")
    };
    // Compared as written: userinfo (`r@other`) or another port is another authority.
    if origin(&url) != Some((scheme, authority)) {
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
