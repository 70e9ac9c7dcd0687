//! The registry side of a Content: where its image is pushed, with the credentials its Secret
//! holds now, and deleting the pushed copy when the Content goes.

use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use super::{Context, Error};
use crate::checkpoint::Push;
use crate::error::error_chain;
use crate::outbound::{self, OutboundError};
use crate::push::PushError;

/// Whether a failed delete of the pushed copy is final: the registry refused it, or it has
/// been unreachable for `patience` of the Content's deletion.
pub fn give_up_on_pushed_copy(
    error: &PushError,
    deleting_for: Duration,
    patience: Duration,
) -> bool {
    error.is_refusal() || deleting_for >= patience
}

/// Where the checkpoint of `content` is pushed, with its credentials read from the Secret; a
/// registry noded may not push to is refused here, before anything is dumped.
pub async fn push_of<R>(
    content: &ContainerCheckpointContent,
    ctx: &Context<R>,
) -> Result<Option<Push>, OutboundError> {
    let Some(route) = outbound::route(content, &ctx.outbound)? else {
        return Ok(None);
    };
    ctx.checkpointer.pusher.admit(&route.to).await?;
    let credentials =
        outbound::credentials(&ctx.client, &ctx.outbound.credentials_namespace, &route).await?;
    let compression = content
        .spec
        .registry
        .as_ref()
        .and_then(|r| r.compression)
        .unwrap_or_default();
    Ok(Some(Push {
        to: route.to,
        credentials,
        compression,
    }))
}

/// Everything `content` holds outside its node, before its finalizer goes: the pushed copy,
/// then the credentials copy it was pushed (and deleted) with.
pub async fn let_go<R: Runtime>(
    content: &ContainerCheckpointContent,
    ctx: &Context<R>,
) -> Result<(), Error> {
    unpublish(content, ctx).await?;
    outbound::forget_copy(&ctx.client, &ctx.outbound.credentials_namespace, content)
        .await
        .map_err(|source| Error::Api {
            name: content.name_any(),
            source,
        })
}

/// Deletes the Content's copy in the registry it was pushed to, if any. A registry that may
/// still answer is asked again with the Content's backoff; a copy that cannot go is logged,
/// counted and told in an Event on the Content, with the registry's answer.
async fn unpublish<R: Runtime>(
    content: &ContainerCheckpointContent,
    ctx: &Context<R>,
) -> Result<(), Error> {
    let Some(image) = content.status.as_ref().and_then(|s| s.image.as_deref()) else {
        return Ok(());
    };
    let local = &ctx.checkpointer.registry;
    let Some(route) = outbound::of_image(content, &ctx.outbound, local, image) else {
        return Ok(());
    };
    // A Secret deleted first (its namespace going, say) leaves the registry to decide whether
    // an anonymous delete is allowed; its refusal is then told like any other.
    let credentials =
        outbound::credentials(&ctx.client, &ctx.outbound.credentials_namespace, &route)
            .await
            .inspect_err(|e| {
                tracing::warn!(content = %content.name_any(), error = %error_chain(e),
                "deleting the pushed copy without credentials")
            })
            .unwrap_or_default();
    let error = match ctx
        .checkpointer
        .pusher
        .delete(image, credentials.as_ref())
        .await
    {
        Ok(()) => {
            tracing::info!(content = %content.name_any(), %image, "pushed copy deleted");
            ctx.checkpointer.metrics.pushed_copy_deletion("deleted");
            return Ok(());
        }
        Err(error) => error,
    };
    let deleting_for = content
        .metadata
        .deletion_timestamp
        .as_ref()
        .and_then(|t| Duration::try_from(Timestamp::now().duration_since(t.0)).ok())
        .unwrap_or_default();
    if !give_up_on_pushed_copy(&error, deleting_for, ctx.outbound.pushed_copy_patience) {
        return Err(Error::Unpublish {
            name: content.name_any(),
            image: image.to_owned(),
            source: error,
        });
    }
    let why = error_chain(&error);
    tracing::warn!(content = %content.name_any(), %image, error = %why,
        "the copy in the push registry could not be deleted and stays there");
    ctx.checkpointer.metrics.pushed_copy_deletion("kept");
    let event = Event {
        type_: EventType::Warning,
        reason: "PushedCopyKept".into(),
        note: Some(format!(
            "the checkpoint image {image} stays in registry {}: deleting it failed ({why}); \
             delete it there yourself",
            route.to.host
        )),
        action: "DeletePushedCopy".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &content.object_ref(&())).await {
        tracing::warn!(content = %content.name_any(), error = %error_chain(&e),
            "publishing the PushedCopyKept event");
    }
    Ok(())
}
