//! How noded turns an error into one line of text: the shared library's way.

pub use checkpointing::error::error_chain;
