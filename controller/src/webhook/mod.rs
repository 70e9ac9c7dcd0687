//! The restore admission webhook: [`admission`] decides (pure), [`origin`] says where a
//! checkpoint's image may lie, [`eligible`] which nodes can restore it, [`replacement`] tells a
//! migrating workload's new pod and [`workload`] whether its workload made it, [`eviction`]
//! what an eviction of a protected pod does first ([`evict`] serves it), [`serve`] answers the API
//! server on every replica, [`registration`] keeps it registered while this replica leads,
//! [`start`] reads its flags and starts it.

pub mod admission;
pub mod eligible;
pub mod evict;
pub mod eviction;
pub mod guard;
pub mod origin;
pub mod registration;
pub mod replacement;
pub mod serve;
pub mod start;
pub mod workload;

use std::time::Duration;

/// How long a webhook's look-ups may take: under the registration's timeout (5 s), so a slow
/// API server yields our clear answer rather than the API server's bare timeout.
const LOOKUP_BUDGET: Duration = Duration::from_secs(4);
