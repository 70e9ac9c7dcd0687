//! Shared library of the container checkpoint system: the CRD types, the names (annotations,
//! labels, finalizers) every binary agrees on, and the CRI v1 client.

pub mod crd;
pub mod cri;
pub mod names;
