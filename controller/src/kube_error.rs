//! Kube errors as log and status text.

/// A kube error in one line: an API error's Display repeats the whole Status in Debug form.
pub(crate) fn cause(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}
