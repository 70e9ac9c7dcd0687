//! Errors in the API server's own words.

use anyhow::anyhow;

/// The API server's own words for its refusals (admission denials, not found), not kube's
/// debug rendering of them.
pub fn api(err: kube::Error) -> anyhow::Error {
    match err {
        kube::Error::Api(status) => anyhow!(status.message),
        err => err.into(),
    }
}
