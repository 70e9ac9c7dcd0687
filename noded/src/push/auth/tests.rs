use super::*;

fn config(auths: &str) -> Vec<u8> {
    format!("{{\"auths\": {{{auths}}}}}").into_bytes()
}

/// base64("user:p@ss:word")
const AUTH: &str = "dXNlcjpwQHNzOndvcmQ=";

#[test]
fn docker_config_entries_match_the_host_with_or_without_scheme_and_path() {
    let expected = Some(Credentials::new("user", "p@ss:word"));
    for key in [
        "r.example.com:5000",
        "https://r.example.com:5000",
        "http://r.example.com:5000",
        "https://r.example.com:5000/",
        "https://r.example.com:5000/v1/",
        "https://r.example.com:5000/v2/",
    ] {
        let json = config(&format!("\"{key}\": {{\"auth\": \"{AUTH}\"}}"));
        assert_eq!(
            Credentials::from_docker_config(&json, "r.example.com:5000"),
            Ok(expected.clone()),
            "{key}"
        );
    }
    for key in [
        "r.example.com",
        "https://r.example.com:5000/other/",
        "r.example.com:5000/v2/",
        "ftp://r.example.com:5000",
        "https://r.example.com:50000",
    ] {
        let json = config(&format!("\"{key}\": {{\"auth\": \"{AUTH}\"}}"));
        assert_eq!(
            Credentials::from_docker_config(&json, "r.example.com:5000"),
            Ok(None),
            "{key}"
        );
    }
}

#[test]
fn docker_config_keys_match_however_the_host_is_spelled() {
    let expected = Some(Credentials::new("user", "p@ss:word"));
    for (key, host) in [
        ("R.Example.com:443", "r.example.com"),
        ("https://r.example.com:443/v2/", "r.example.com"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("[0:0::1]:5000", "[::1]:5000"),
    ] {
        let json = config(&format!("\"{key}\": {{\"auth\": \"{AUTH}\"}}"));
        assert_eq!(
            Credentials::from_docker_config(&json, host),
            Ok(expected.clone()),
            "{key}"
        );
    }
}

#[test]
fn docker_config_entries_may_give_username_and_password_and_exact_keys_win() {
    let json = config(
        "\"https://r.example.com\": {\"auth\": \"b3RoZXI6b3RoZXI=\"}, \
         \"r.example.com\": {\"username\": \"robot$ci\", \"password\": \"pw\"}",
    );
    assert_eq!(
        Credentials::from_docker_config(&json, "r.example.com"),
        Ok(Some(Credentials::new("robot$ci", "pw")))
    );
    assert_eq!(
        Credentials::from_docker_config(&config(""), "r.example.com"),
        Ok(None)
    );
}

#[test]
fn malformed_docker_configs_are_named_without_their_secrets() {
    let host = "r.example.com";
    let cases: [(Vec<u8>, CredentialsError); 6] = [
        (
            b"{\"auths\": {\"r.example.com\": {\"auth\": \"s3cret".to_vec(),
            CredentialsError::Json {
                line: 1,
                column: 44,
            },
        ),
        (
            b"{\"credsStore\": \"desktop\"}".to_vec(),
            CredentialsError::NoAuths,
        ),
        (
            config("\"r.example.com\": \"s3cret\""),
            CredentialsError::Entry { key: host.into() },
        ),
        (
            config("\"r.example.com\": {\"auth\": \"s3cret!!\"}"),
            CredentialsError::Base64 { key: host.into() },
        ),
        (
            // base64("s3cret"): no colon.
            config("\"r.example.com\": {\"auth\": \"czNjcmV0\"}"),
            CredentialsError::NoColon { key: host.into() },
        ),
        (
            config("\"r.example.com\": {\"username\": \"s3cret\"}"),
            CredentialsError::Missing { key: host.into() },
        ),
    ];
    for (json, expected) in cases {
        let error = Credentials::from_docker_config(&json, host).unwrap_err();
        assert_eq!(error, expected);
        let message = error.to_string();
        assert!(
            !message.contains("s3cret") && !message.contains("czNj"),
            "{message}"
        );
    }
}

#[test]
fn debug_hides_the_password() {
    let text = format!("{:?}", Credentials::new("noded", "s3cret"));
    assert!(text.contains("noded") && !text.contains("s3cret"), "{text}");
}

#[test]
fn challenges_are_parsed_with_quoted_commas() {
    assert_eq!(
        parse_challenge(
            r#"Bearer realm="https://auth.example.com/token",service="registry, example",scope="repository:a/b:pull,push""#
        ),
        Some(Challenge::Bearer {
            realm: "https://auth.example.com/token".into(),
            service: Some("registry, example".into()),
        })
    );
    assert_eq!(
        parse_challenge(r#"Basic realm="Registry Realm""#),
        Some(Challenge::Basic)
    );
    assert_eq!(parse_challenge("basic"), Some(Challenge::Basic));
    assert_eq!(
        parse_challenge(r#"bearer  realm = "https://a/t\"x" , error="invalid_token""#),
        Some(Challenge::Bearer {
            realm: "https://a/t\"x".into(),
            service: None,
        })
    );
    // An unknown scheme first, then a usable one.
    assert_eq!(
        parse_challenge(r#"Negotiate, Digest realm="x", nonce="a,b", Bearer realm=https://a/t"#),
        Some(Challenge::Bearer {
            realm: "https://a/t".into(),
            service: None,
        })
    );
    assert_eq!(parse_challenge(r#"Bearer service="s""#), None, "no realm");
    assert_eq!(parse_challenge(r#"Digest realm="x""#), None);
    assert_eq!(parse_challenge(""), None);
}

#[test]
fn token_urls_encode_service_and_scope() {
    assert_eq!(
        token_url(
            "https://a/token",
            Some("registry, example"),
            "ns/cc",
            "pull,push"
        ),
        "https://a/token?service=registry%2C%20example&scope=repository%3Ans%2Fcc%3Apull%2Cpush"
    );
    assert_eq!(
        token_url("https://a/token?x=1", None, "cc", "delete"),
        "https://a/token?x=1&scope=repository%3Acc%3Adelete"
    );
}

#[test]
fn token_answers_give_token_or_access_token_and_a_lifetime() {
    assert_eq!(
        parse_token(br#"{"token":"t1","expires_in":300}"#),
        Some(("t1".into(), Duration::from_secs(300)))
    );
    assert_eq!(
        parse_token(br#"{"access_token":"t2"}"#),
        Some(("t2".into(), Duration::from_secs(60)))
    );
    assert_eq!(
        parse_token(br#"{"token":"","access_token":"t3","expires_in":0}"#),
        Some(("t3".into(), Duration::from_secs(60)))
    );
    assert_eq!(parse_token(br#"{"expires_in":60}"#), None);
    assert_eq!(parse_token(b"<html>"), None);
}

#[test]
fn cached_tokens_are_per_scope_and_credentials_and_expire_early() {
    let cache = Cache::default();
    let alice = Credentials::new("alice", "a");
    let scope = |repository, actions, credentials| Scope {
        host: "r.example.com",
        repository,
        actions,
        credentials,
    };
    cache.bearer(
        &scope("ns/cc", "pull,push", Some(&alice)),
        "t".into(),
        Duration::from_secs(60),
    );
    let header = cache
        .get(&scope("ns/cc", "pull,push", Some(&alice)))
        .unwrap();
    assert_eq!(header.to_str().unwrap(), "Bearer t");
    assert!(header.is_sensitive());
    assert!(cache.get(&scope("ns/cc", "delete", Some(&alice))).is_none());
    assert!(
        cache
            .get(&scope("ns/other", "pull,push", Some(&alice)))
            .is_none()
    );
    assert!(cache.get(&scope("ns/cc", "pull,push", None)).is_none());
    let bob = Credentials::new("alice", "b");
    assert!(
        cache
            .get(&scope("ns/cc", "pull,push", Some(&bob)))
            .is_none()
    );

    // A token for 1 s is kept for less than that.
    cache.bearer(
        &scope("x", "delete", None),
        "short".into(),
        Duration::from_secs(1),
    );
    std::thread::sleep(Duration::from_millis(850));
    assert!(cache.get(&scope("x", "delete", None)).is_none());

    cache.forget(&scope("ns/cc", "pull,push", Some(&alice)));
    assert!(
        cache
            .get(&scope("ns/cc", "pull,push", Some(&alice)))
            .is_none()
    );
}

#[test]
fn token_realms_are_https_or_an_insecure_host() {
    let insecure = vec!["10.77.0.1:5000".to_owned()];
    for realm in [
        "https://auth.example.com/token",
        "HTTPS://auth.example.com:8443/token?x=y",
        "http://10.77.0.1:5000/token",
        "http://10.77.0.1:05000/token",
    ] {
        assert!(realm_allowed(realm, &insecure), "{realm}");
    }
    for realm in [
        "http://auth.example.com/token",
        "http://127.0.0.1:9811/metrics",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.77.0.1:5001/token",
        "http://10.77.0.1:5000@evil/token",
        "https:///token",
        "ftp://auth.example.com/token",
        "/token",
        "",
    ] {
        assert!(!realm_allowed(realm, &insecure), "{realm}");
    }
}
