//! Whether a restored pod runs: the shared library's judgement, which the plugin's `restore`
//! waits on too.

pub use checkpointing::health::{all_running, stuck};
