//! Why a reconcile failed, for the error policy's retry.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading Pod {namespace}/{name}")]
    ReadPod {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("copying registry Secret {namespace}/{name} for noded")]
    CopyCredentials {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating ContainerCheckpointContent {namespace}/{name}")]
    CreateContent {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of ContainerCheckpoint {namespace}/{name}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}
