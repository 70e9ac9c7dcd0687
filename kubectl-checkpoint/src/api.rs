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

#[cfg(test)]
pub mod tests {
    use kube::core::Status;

    /// The API server's refusal with `code` and `message`.
    pub fn refused(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(Box::new(Status::failure(message, "Reason").with_code(code)))
    }
}
