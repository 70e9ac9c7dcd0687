//! Shared library of the container checkpoint system: the CRD types, the names (annotations,
//! labels, finalizers) every binary agrees on and the daemons' start-up; with the `node`
//! feature also the CRI v1 client, the checkpoint archive reader and the OCI checkpoint-image
//! writer, which only the node side uses.

#[cfg(feature = "admin")]
pub mod admin;
#[cfg(feature = "node")]
pub mod archive;
pub mod backoff;
pub mod crd;
#[cfg(feature = "node")]
pub mod cri;
#[cfg(feature = "node")]
pub mod criu;
pub mod daemon;
#[cfg(feature = "node")]
pub mod digest;
pub mod error;
pub mod health;
#[cfg(feature = "serve")]
pub mod listen;
pub mod names;
#[cfg(feature = "node")]
pub mod oci;
pub mod reference;
pub mod restored;
#[cfg(feature = "node")]
pub mod runtime;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod text;
#[cfg(feature = "tls")]
pub mod tls;
pub mod volumes;
