//! The registry a checkpoint image was pushed to, as the [`Upstream`] of that image when no
//! node can serve it (its node gone, its archive gone, its noded refusing): asked through the
//! push client, with the credentials noded pushes and deletes that Content's copy with.

use axum::body::Body;
use axum::http::Response;
use checkpointing::crd::ContainerCheckpointContent;

use super::fetch::{FetchError, Upstream};
use crate::outbound::{self, Defaults, Route};
use crate::push::{Credentials, Destination, Pusher};

/// Where pushed copies are, and how to reach them.
pub struct Copies {
    pusher: Pusher,
    /// The cluster's push defaults: which Secret a copy was pushed with.
    defaults: Defaults,
}

impl Copies {
    pub fn new(pusher: Pusher, defaults: Defaults) -> Self {
        Self { pusher, defaults }
    }

    /// Where `content`'s pushed copy is, and with which Secret: `None` when it has none (its
    /// image is in the node-local registry `local`).
    pub fn of(&self, content: &ContainerCheckpointContent, local: &str) -> Option<Route> {
        let image = content.status.as_ref()?.image.as_deref()?;
        outbound::of_image(content, &self.defaults, local, image)
    }

    /// The copy at `at`, asked with `credentials`.
    pub fn upstream<'a>(
        &'a self,
        at: &'a Destination,
        credentials: Option<Credentials>,
    ) -> Pushed<'a> {
        Pushed {
            pusher: &self.pusher,
            at,
            credentials,
        }
    }
}

/// One pushed copy's repository.
pub struct Pushed<'a> {
    pusher: &'a Pusher,
    at: &'a Destination,
    credentials: Option<Credentials>,
}

impl Upstream for Pushed<'_> {
    fn url(&self, path: &str) -> String {
        self.pusher.url(self.at, path)
    }

    async fn get(&self, path: &str) -> Result<Response<Body>, FetchError> {
        self.pusher
            .pull(self.at, path, self.credentials.as_ref())
            .await
            .map_err(FetchError::Registry)
    }
}
