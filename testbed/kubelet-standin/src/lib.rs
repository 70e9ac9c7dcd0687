//! The kubelet stand-in's parts, as a library so the benchmarks can build the very CRI requests
//! the stand-in sends (`bench/` times raw CRI calls against the full Kubernetes path).

pub mod logs;
pub mod node;
pub mod pod;
pub mod runtime;
pub mod status;
pub mod supervisor;
