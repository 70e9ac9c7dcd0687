//! Choices made before a checkpoint request is created: which container, what name.

use checkpointing::names::DNS_LABEL_MAX;

use crate::cli::UsageError;

/// The container to checkpoint: the requested one if the pod has it, else the pod's only one.
pub fn choose_container(
    pod: &str,
    containers: &[&str],
    requested: Option<&str>,
) -> Result<String, UsageError> {
    let list = containers.join(", ");
    match (requested, containers) {
        (Some(c), _) if containers.contains(&c) => Ok(c.to_owned()),
        (Some(c), _) => Err(UsageError(format!(
            "pod {pod} has no container {c:?}; its containers: {list}"
        ))),
        (None, [only]) => Ok((*only).to_owned()),
        (None, _) => Err(UsageError(format!(
            "pod {pod} has {} containers ({list}): choose one with -c",
            containers.len()
        ))),
    }
}

/// `<pod>-<container>-<unix seconds>`, lower case, other characters than letters, digits and
/// `-` replaced by `-`, the stem shortened so the whole is a DNS label (the controller derives
/// labels and image tags from it).
pub fn default_name(pod: &str, container: &str, unix_seconds: u64) -> String {
    let suffix = format!("-{unix_seconds}");
    let mut stem: String = format!("{pod}-{container}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    // Every char is ASCII now, so any length is a char boundary.
    stem.truncate(DNS_LABEL_MAX - suffix.len());
    format!("{}{suffix}", stem.trim_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_only_container_is_the_default() {
        assert_eq!(choose_container("p", &["app"], None).unwrap(), "app");
    }

    #[test]
    fn several_containers_need_c_and_the_error_lists_them() {
        let err = choose_container("p", &["app", "sidecar"], None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod p has 2 containers (app, sidecar): choose one with -c"
        );
        assert_eq!(
            choose_container("p", &["app", "sidecar"], Some("sidecar")).unwrap(),
            "sidecar"
        );
    }

    #[test]
    fn an_unknown_container_is_refused_with_the_list() {
        let err = choose_container("p", &["app", "sidecar"], Some("db")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod p has no container \"db\"; its containers: app, sidecar"
        );
    }

    #[test]
    fn default_names_are_dns_labels() {
        assert_eq!(
            default_name("stateful-app", "counter", 1_700_000_000),
            "stateful-app-counter-1700000000"
        );
        assert_eq!(default_name("web.v2", "App_1", 5), "web-v2-app-1-5");
        let long = "a".repeat(253);
        let name = default_name(&long, "c", u64::MAX);
        assert_eq!(name.len(), DNS_LABEL_MAX);
        assert!(name.ends_with(&format!("-{}", u64::MAX)));
        // A cut right after a `-` leaves no `--` before the seconds.
        let name = default_name(&format!("{}-b", "a".repeat(51)), "c", 1_700_000_000);
        assert_eq!(name, format!("{}-1700000000", "a".repeat(51)));
    }
}
