//! Holding a migration's source still through its checkpoint (`Job::hold`): the runtime's
//! pause bridged into a freeze of noded's ([`crate::freeze`]), and the thaw when the
//! checkpoint fails or its migration releases it.

use std::path::Path;
use std::time::Duration;

use checkpointing::cri::{CriError, Runtime};

use super::{Checkpointer, Failure, Job};
use crate::error::error_chain;
use crate::freeze::{self, FreezeError};

/// Pause before another try of a dump whose container did not freeze or was not held.
pub(super) const FREEZE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Tries of such a dump.
pub(super) const DUMP_TRIES: usize = 3;

/// Whether a dump failed only for want of a freeze in time, leaving the container as it was.
pub(super) fn retryable(failure: &Failure) -> bool {
    match failure {
        Failure::Runtime(e) => e.freeze_failed(),
        Failure::Hold(FreezeError::Gap) => true,
        _ => false,
    }
}

impl<R: Runtime> Checkpointer<R> {
    /// The cgroup of a held job's container, through which it is held.
    pub(super) async fn hold(&self, container_id: &str) -> Result<String, Failure> {
        self.runtime
            .container_cgroup(container_id)
            .await?
            .ok_or(Failure::Hold(FreezeError::NoCgroup))
    }

    /// One dump; for a held job, its runtime's pause bridged into a freeze.
    pub(super) async fn dump_holding(
        &self,
        id: &str,
        partial: &Path,
        timeout: Duration,
        hold: Option<&String>,
    ) -> Result<(), Failure> {
        let Some(cgroup) = hold else {
            return Ok(self.dump(id, partial, timeout).await?);
        };
        let dump = self.dump(id, partial, timeout);
        let (written, held) = freeze::bridge(&self.freezer, cgroup, dump).await;
        written?;
        held.map_err(Failure::Hold)?;
        tracing::info!(container = %id, %cgroup, "container held from its dump on");
        Ok(())
    }

    /// Thaws the container a held job froze (`container_id`, or the job's running container
    /// when unknown); one that is gone needs nothing.
    pub async fn release(&self, job: &Job<'_>, container_id: Option<&str>) -> Result<(), Failure> {
        let container_id = match container_id {
            Some(id) => id.to_owned(),
            None => match self.resolve(job).await {
                Ok(container) => container.id,
                Err(Failure::NotRunning { .. }) => return Ok(()),
                Err(e) => return Err(e),
            },
        };
        let cgroup = match self.runtime.container_cgroup(&container_id).await {
            Ok(Some(cgroup)) => cgroup,
            Ok(None) | Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        self.freezer.thaw(&cgroup).map_err(Failure::Hold)?;
        tracing::info!(container = %container_id, %cgroup, "held container thawed");
        Ok(())
    }

    pub(super) async fn release_after_failure(&self, job: &Job<'_>, container_id: Option<&str>) {
        if let Err(error) = self.release(job, container_id).await {
            tracing::error!(container = ?container_id, error = %error_chain(&error), "could not thaw a held container after its checkpoint failed");
        }
    }
}
