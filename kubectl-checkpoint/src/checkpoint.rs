//! Choices made before a checkpoint request is created: which container, what name.

use crate::cli::UsageError;
use crate::name;

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

/// `<pod>-<container>-<unix seconds>`, made a DNS label.
pub fn default_name(pod: &str, container: &str, unix_seconds: u64) -> String {
    name::dated(&format!("{pod}-{container}"), unix_seconds)
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
    fn default_names_join_pod_and_container() {
        assert_eq!(
            default_name("stateful-app", "counter", 1_700_000_000),
            "stateful-app-counter-1700000000"
        );
        assert_eq!(default_name("web.v2", "App_1", 5), "web-v2-app-1-5");
    }
}
