//! Shared library of the container checkpoint system: the CRD types, the names (annotations,
//! labels, finalizers) every binary agrees on, the CRI v1 client, the checkpoint archive reader
//! and the OCI checkpoint-image writer.

pub mod archive;
pub mod crd;
pub mod cri;
pub mod daemon;
pub mod names;
pub mod oci;
