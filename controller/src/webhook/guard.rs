//! Checkpoint images run only through `restore-from`. A pod's container image that points at
//! the node-local checkpoint registry, or at a push registry's checkpoint repository, is
//! admitted only when this webhook put it there: the
//! restore it is admitting now, or an image unchanged since an earlier admission. References by
//! image ID count as checkpoint images too: the runtime resolves them to any image it holds.
//! The restored-from marker is the webhook's alone: users cannot add or change it. Pure
//! functions.

use checkpointing::names::{RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION};
use checkpointing::reference::{DOCKER_HUB, ImageRef, Spelling};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// A container image the webhook did not write that points at the checkpoint registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smuggled {
    /// `container`, `init container` or `ephemeral container`.
    pub kind: &'static str,
    pub container: String,
    pub image: String,
}

/// Where checkpoint images live: the node-local registry, on `port` of whatever host, and the
/// checkpoint repositories of push registries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckpointImages {
    pub port: u16,
    pub repositories: Vec<Repository>,
}

/// A push registry's checkpoint repository, normalised as image references are
/// ([`ImageRef`]), so that it is compared with images however either is spelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repository {
    pub host: String,
    pub path: String,
}

impl std::fmt::Display for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.host, self.path)
    }
}

impl Repository {
    /// What every spelling of an image under this repository contains, lower-cased: its path,
    /// less the `library/` a Docker Hub name may leave out.
    fn needle(&self) -> &str {
        match self.path.strip_prefix("library/") {
            Some(rest) if self.host == DOCKER_HUB => rest,
            _ => &self.path,
        }
    }

    /// An RE2 pattern that every lower-cased spelling of an image under this repository
    /// matches: its [`Self::needle`] as whole path components, at the start (no host) or after
    /// a `/`, and ending the name or followed by `/`, a tag or a digest.
    pub fn pattern(&self) -> String {
        format!("(^|/){}($|[/:@])", self.needle().replace('.', "\\."))
    }
}

impl CheckpointImages {
    /// Whether `image` is a checkpoint image: its registry part (before the first `/`) names
    /// the node-local registry's port, however the host is spelled (`localhost`, `127.0.0.1`,
    /// upper case, a name that resolves to loopback …), since only the port tells them apart;
    /// or, normalised, it lies under a checkpoint repository (`docker.io/` left out or
    /// written `index.docker.io/`, `:443`, upper case, an IPv6 address written otherwise).
    pub fn contains(&self, image: &str) -> bool {
        if is_image_id(image) {
            return true;
        }
        let local = Spelling::of(image).port() == Some(self.port);
        if local || self.repositories.is_empty() {
            return local;
        }
        match ImageRef::parse(image) {
            Ok(image) => self
                .repositories
                .iter()
                .any(|r| image.is_under(&r.host, &r.path)),
            // Not a reference we can read, which a runtime might read otherwise: any mention
            // of a checkpoint repository's path counts (failing closed).
            Err(_) => {
                let image = image.to_ascii_lowercase();
                self.repositories.iter().any(|r| image.contains(r.needle()))
            }
        }
    }

    /// A CEL expression over `object` (a Pod) true for every pod [`Self::contains`] may hold
    /// true for, for the registration's `matchConditions`: pods for which it is false never
    /// reach the webhook. A superset: a repository's images are sent by their path alone,
    /// whatever host spelling they use.
    pub fn match_condition(&self) -> String {
        let port = self.port;
        let mut image = format!("c.image.matches('^[^/]*:0*{port}/') || c.image.matches('{ID}')");
        if !self.repositories.is_empty() {
            // Paths are validated image paths ([a-z0-9._-/]): the literals are safe, their only
            // backslashes the pattern's own (escaped once more for CEL).
            let under = self.repositories.iter().map(|r| {
                let pattern = r.pattern().replace('\\', "\\\\");
                format!(" || c.image.lowerAscii().matches('{pattern}')")
            });
            image = format!("{image}{}", under.collect::<String>());
        }
        let image = format!("({image})");
        let uses = |list: &str| {
            format!(
                "(has(object.spec.{list}) && object.spec.{list}.exists(c, has(c.image) && \
                 {image}))"
            )
        };
        format!(
            "(has(object.metadata.annotations) && object.metadata.annotations.exists(k, \
             k.startsWith('{group}/'))) || {} || {} || {}",
            uses("containers"),
            uses("initContainers"),
            uses("ephemeralContainers"),
            group = checkpointing::names::GROUP,
        )
    }
}

/// An image ID as a reference, for RE2 and CEL alike: `sha256:` and hex digits (all of an ID
/// or a prefix), or 12 to 64 bare hex digits.
const ID: &str = "^(?i)(sha256:[0-9a-f]+|[0-9a-f]{12,64})$";

/// Whether `image` names an image by its ID, which a runtime resolves to whatever image it
/// holds with that ID, whatever its name: a checkpoint image a restore pulled onto the node
/// included. Refused like a checkpoint image (a pod does not need to name its image so), since
/// the guard cannot tell which IDs are checkpoints.
pub fn is_image_id(image: &str) -> bool {
    let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
    let prefixed = image
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("sha256:"));
    if prefixed {
        let rest = &image[7..];
        !rest.is_empty() && hex(rest)
    } else {
        (12..=64).contains(&image.len()) && hex(image)
    }
}

/// A push registry's checkpoint repository as `--checkpoint-repository` takes it:
/// `HOST[:PORT]/PATH` (a path alone is Docker Hub's), normalised.
pub fn parse_repository(value: &str) -> Result<Repository, String> {
    let trimmed = value.trim().trim_end_matches('/');
    let invalid = |why: String| {
        format!("{value:?} is not a repository HOST[:PORT]/PATH without tag or digest: {why}")
    };
    if !trimmed.contains('/') {
        return Err(invalid("no path".into()));
    }
    let parsed = ImageRef::parse(trimmed).map_err(|e| invalid(e.to_string()))?;
    if parsed.tag.is_some() || parsed.digest.is_some() {
        return Err(invalid("it names a tag or digest".into()));
    }
    Ok(Repository {
        host: parsed.host,
        path: parsed.repository,
    })
}

/// Every (kind, name, image) of a pod.
fn images(pod: &Pod) -> Vec<(&'static str, &str, &str)> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut all: Vec<(&'static str, &str, &str)> = Vec::new();
    for c in &spec.containers {
        all.push(("container", &c.name, c.image.as_deref().unwrap_or_default()));
    }
    for c in spec.init_containers.iter().flatten() {
        all.push((
            "init container",
            &c.name,
            c.image.as_deref().unwrap_or_default(),
        ));
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        all.push((
            "ephemeral container",
            &c.name,
            c.image.as_deref().unwrap_or_default(),
        ));
    }
    all
}

/// The first checkpoint image of `pod` the webhook did not write. `restored` are the
/// containers this admission restores (their images are about to be replaced by the
/// checkpoint's); `old` the pod before an update, whose images were admitted when they were
/// written.
pub fn smuggled(
    pod: &Pod,
    old: Option<&Pod>,
    restored: &[&str],
    checkpoints: &CheckpointImages,
) -> Option<Smuggled> {
    let before = old.map(images).unwrap_or_default();
    images(pod)
        .into_iter()
        .filter(|(_, _, image)| checkpoints.contains(image))
        .find(|&(kind, name, image)| {
            let restoring = kind == "container" && restored.contains(&name);
            let unchanged = before.contains(&(kind, name, image));
            !restoring && !unchanged
        })
        .map(|(kind, name, image)| Smuggled {
            kind,
            container: name.to_owned(),
            image: image.to_owned(),
        })
}

impl std::fmt::Display for Smuggled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if is_image_id(&self.image) {
            " (by image ID, which may be a checkpoint image the node holds: name an image by \
             repository instead)"
        } else {
            ""
        };
        write!(
            f,
            "{} {:?} uses checkpoint image {:?}{how}; checkpoint images run only through annotation {RESTORE_FROM_ANNOTATION} naming a checkpoint of \
             the pod's namespace, which puts the image in place: set the annotation and give \
             the container its ordinary image",
            self.kind, self.container, self.image
        )
    }
}

/// JSON patch operations that undo a user's change to the restored-from marker: on create it
/// is removed, on update it is put back as it was. Empty when the marker is untouched.
pub fn marker_reset(pod: &Pod, old: Option<&Pod>) -> Vec<Value> {
    let marker = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTORED_FROM_DIGEST_ANNOTATION))
            .cloned()
    };
    let path = format!(
        "/metadata/annotations/{}",
        RESTORED_FROM_DIGEST_ANNOTATION
            .replace('~', "~0")
            .replace('/', "~1")
    );
    match (marker(pod), old.and_then(marker)) {
        (now, before) if now == before => Vec::new(),
        (Some(_), None) => vec![json!({"op": "remove", "path": path})],
        // Annotations exist: the pod had them before and still has some (or gets this one).
        (_, Some(before)) if pod.metadata.annotations.is_some() => {
            vec![json!({"op": "add", "path": path, "value": before})]
        }
        (_, Some(before)) => vec![json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": {RESTORED_FROM_DIGEST_ANNOTATION: before},
        })],
        (None, None) => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
