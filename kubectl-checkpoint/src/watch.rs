//! Watching one object by name, with the API server's words in its errors.

use anyhow::anyhow;
use futures::{Stream, TryStreamExt};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};

use crate::api::api;

/// The object `name` each time it changes, starting with how it is now.
pub fn updates<K>(api: Api<K>, name: &str) -> impl Stream<Item = anyhow::Result<K>> + use<K>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    watcher(api, config).applied_objects().map_err(watch_error)
}

/// The API server's words in watch errors too (a missing right to watch, say).
fn watch_error(err: watcher::Error) -> anyhow::Error {
    match err {
        watcher::Error::InitialListFailed(err)
        | watcher::Error::WatchStartFailed(err)
        | watcher::Error::WatchFailed(err) => api(err),
        watcher::Error::WatchError(status) => anyhow!(status.message),
        err => err.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::refused;
    use kube::core::Status;

    #[test]
    fn api_errors_are_the_servers_message_alone() {
        let denial = r#"admission webhook "restore" denied the request: ContainerCheckpoint "cp1" not found"#;
        assert_eq!(api(refused(400, denial)).to_string(), denial);
        assert_eq!(
            watch_error(watcher::Error::InitialListFailed(refused(403, "forbidden"))).to_string(),
            "forbidden"
        );
        let expired = Box::new(Status::failure("too old", "Expired"));
        assert_eq!(
            watch_error(watcher::Error::WatchError(expired)).to_string(),
            "too old"
        );
    }
}
