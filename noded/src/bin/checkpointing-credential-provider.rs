//! The kubelet's image credential provider for the node-local checkpoint registry.
//!
//! The kubelet runs it for every pull of a `localhost:5050/...` image, with a ServiceAccount
//! token bound to the pod being started and issued for the registry's audience (configured in
//! deploy/kubelet/credential-provider.yaml). It answers with that token as the registry
//! password, for that one image and uncached, so the runtime's pull proves to noded which pod
//! it is for. Nothing else is read or written; errors go to stderr and the exit status.

use std::io::Read as _;

use checkpointing::reference::Spelling;
use serde_json::{Value, json};

const API_VERSION: &str = "credentialprovider.kubelet.k8s.io/v1";

/// The response to one `CredentialProviderRequest`.
fn respond(request: &[u8]) -> Result<Value, String> {
    let request: Value =
        serde_json::from_slice(request).map_err(|e| format!("reading the request: {e}"))?;
    let field = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("the request has no {name}"))
    };
    let image = field("image")?;
    let token = field("serviceAccountToken").map_err(|e| {
        format!("{e}: the kubelet's provider configuration must set tokenAttributes")
    })?;
    // The image without its digest or tag: credentials for exactly this repository.
    let repository = Spelling::of(image).name;
    Ok(json!({
        "apiVersion": API_VERSION,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Image",
        // The token is the pod's: never reuse it for another pod's pull.
        "cacheDuration": "0s",
        "auth": {repository: {"username": "kubelet", "password": token}},
    }))
}

fn main() -> std::process::ExitCode {
    let mut request = Vec::new();
    let answer = std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut request)
        .map_err(|e| format!("reading stdin: {e}"))
        .and_then(|_| respond(&request));
    match answer {
        Ok(response) => {
            println!("{response}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("checkpointing-credential-provider: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(image: &str, token: Option<&str>) -> Vec<u8> {
        let mut r =
            json!({"apiVersion": API_VERSION, "kind": "CredentialProviderRequest", "image": image});
        if let Some(token) = token {
            r["serviceAccountToken"] = token.into();
        }
        r.to_string().into_bytes()
    }

    #[test]
    fn the_pods_token_is_the_password_for_that_repository_only_and_never_cached() {
        let r = respond(&request(
            "localhost:5050/team-a/cp@sha256:aa",
            Some("tok.en"),
        ))
        .unwrap();
        assert_eq!(r["kind"], "CredentialProviderResponse");
        assert_eq!(r["apiVersion"], API_VERSION);
        assert_eq!(r["cacheDuration"], "0s");
        assert_eq!(
            r["auth"],
            json!({"localhost:5050/team-a/cp": {"username": "kubelet", "password": "tok.en"}})
        );
        let tagged = respond(&request("localhost:5050/team-a/cp:v1", Some("t"))).unwrap();
        assert!(tagged["auth"].get("localhost:5050/team-a/cp").is_some());
    }

    #[test]
    fn without_a_token_or_image_it_fails_and_says_why() {
        let e = respond(&request("localhost:5050/a/b@sha256:aa", None)).unwrap_err();
        assert!(
            e.contains("serviceAccountToken") && e.contains("tokenAttributes"),
            "{e}"
        );
        assert!(
            respond(&request("", Some("t")))
                .unwrap_err()
                .contains("image")
        );
        assert!(
            respond(b"not json")
                .unwrap_err()
                .contains("reading the request")
        );
    }
}
