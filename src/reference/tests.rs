use super::*;

fn name(reference: &str) -> String {
    ImageRef::parse(reference)
        .unwrap_or_else(|e| panic!("{reference}: {e}"))
        .name()
}

#[test]
fn docker_hub_spellings_are_one_name() {
    for spelling in [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/busybox",
        "docker.io/library/busybox:1.36",
        "index.docker.io/busybox",
        "index.docker.io/library/busybox",
        "registry-1.docker.io/library/busybox",
        "DOCKER.IO/library/busybox",
        "Index.Docker.IO:443/busybox",
        "docker.io:0443/busybox",
    ] {
        assert_eq!(name(spelling), "docker.io/library/busybox", "{spelling}");
    }
    // Two components on Docker Hub get no library/ prefix.
    assert_eq!(name("team/app"), "docker.io/team/app");
    assert_eq!(name("index.docker.io/team/app"), "docker.io/team/app");
}

#[test]
fn hosts_are_lowercase_without_https_default_port() {
    assert_eq!(name("R.Example.COM/team/cp"), "r.example.com/team/cp");
    assert_eq!(name("r.example.com:443/team/cp"), "r.example.com/team/cp");
    assert_eq!(
        name("r.example.com:5000/team/cp"),
        "r.example.com:5000/team/cp"
    );
    assert_eq!(name("r.example.com:05000/cp"), "r.example.com:5000/cp");
    assert_eq!(name("localhost/cp"), "localhost/cp");
    assert_eq!(name("localhost:5050/ns/cp"), "localhost:5050/ns/cp");
    assert_eq!(
        name("10.77.0.1:5000/checkpoints/x"),
        "10.77.0.1:5000/checkpoints/x"
    );
    assert_eq!(name("10.77.0.1:443/x"), "10.77.0.1/x");
    // An upper-case first component is a host (no path may have upper case).
    assert_eq!(name("Registry/x"), "registry/x");
}

#[test]
fn ipv6_hosts_are_canonical_in_brackets() {
    assert_eq!(name("[::1]:5000/x"), "[::1]:5000/x");
    assert_eq!(name("[0:0:0:0:0:0:0:1]:5000/x"), "[::1]:5000/x");
    assert_eq!(name("[2001:DB8::0001]:443/x"), "[2001:db8::1]/x");
    // The IPv4 address it maps is the one the runtime reaches.
    assert_eq!(name("[::ffff:10.77.0.1]:5000/x"), "10.77.0.1:5000/x");
    assert_eq!(name("[::ffff:a4d:1]:5000/x"), "10.77.0.1:5000/x");
    for bad in ["[::1/x", "[::g]/x", "[::1]5000/x", "[10.0.0.1]/x"] {
        assert!(
            matches!(ImageRef::parse(bad), Err(RefError::Host(_))),
            "{bad}"
        );
    }
}

#[test]
fn tags_and_digests_are_told_from_ports() {
    let r = ImageRef::parse("r.example.com:5000/team/cp:v1.2_x-y").unwrap();
    assert_eq!(r.host, "r.example.com:5000");
    assert_eq!(r.repository, "team/cp");
    assert_eq!(r.tag.as_deref(), Some("v1.2_x-y"));
    assert_eq!(r.digest, None);

    let digest = format!("sha256:{}", "a".repeat(64));
    let r = ImageRef::parse(&format!("localhost:5050/ns/cp:uid@{digest}")).unwrap();
    assert_eq!(r.tag.as_deref(), Some("uid"));
    assert_eq!(r.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(r.to_string(), format!("localhost:5050/ns/cp:uid@{digest}"));

    let r = ImageRef::parse(&format!("busybox@{digest}")).unwrap();
    assert_eq!(r.to_string(), format!("docker.io/library/busybox@{digest}"));
    // No '/' in the name: the ':' is a tag, as runtimes read it.
    let r = ImageRef::parse("localhost:5000").unwrap();
    assert_eq!(r.name(), "docker.io/library/localhost");
    assert_eq!(r.tag.as_deref(), Some("5000"));
}

#[test]
fn malformed_references_are_refused() {
    for (bad, why) in [
        ("", "empty"),
        ("r.example.com/Team/cp", "upper-case path"),
        ("r.example.com//cp", "empty component"),
        ("r.example.com/cp/", "trailing slash"),
        ("r.example.com/", "no path"),
        ("r.example.com/-cp", "leading separator"),
        ("r.example.com/cp:", "empty tag"),
        ("r.example.com/cp:.x", "tag starting with a dot"),
        ("r.example.com/cp@sha256", "digest without encoded part"),
        ("r.example.com/cp@:abc", "digest without algorithm"),
        ("r.example.com/cp@sha256:ab/c", "slash in digest"),
        ("r.example.com:/cp", "empty port"),
        ("r.example.com:99999/cp", "port out of range"),
        ("r.example.com:0/cp", "port zero"),
        ("r.exa mple.com/cp", "space in host"),
        ("r..example.com/cp", "empty label"),
        ("-r.example.com/cp", "label starting with a hyphen"),
        ("http://r.example.com/cp", "a scheme"),
        ("r.example.com/c p", "space in path"),
    ] {
        assert!(ImageRef::parse(bad).is_err(), "{why}: {bad:?} parsed");
    }
    assert!(ImageRef::parse(&format!("r.example.com/{}", "a".repeat(MAX_NAME))).is_err());
    assert!(ImageRef::parse(&format!("r.example.com/cp:{}", "t".repeat(MAX_TAG + 1))).is_err());
}

#[test]
fn repositories_hold_whole_components_only() {
    let image = ImageRef::parse("R.example.com:443/team/ns/cp:uid").unwrap();
    assert!(image.is_under("r.example.com", "team"));
    assert!(image.is_under("r.example.com", "team/ns/cp"));
    assert!(image.is_under("r.example.com", ""));
    assert!(!image.is_under("r.example.com", "tea"));
    assert!(!image.is_under("r.example.com", "team/ns/cp/x"));
    assert!(!image.is_under("r.example.com:5000", "team"));
    assert!(!image.is_under("other.example.com", "team"));
}

#[test]
fn hosts_normalise_alone() {
    assert_eq!(normalise_host("Index.Docker.io:443").unwrap(), "docker.io");
    assert_eq!(normalise_host("[::FFFF:127.0.0.1]").unwrap(), "127.0.0.1");
    assert_eq!(normalise_host("10.77.0.1:5000").unwrap(), "10.77.0.1:5000");
    assert!(normalise_host("").is_err());
    assert!(normalise_host("a:b:c").is_err());
}

#[test]
fn a_spelling_keeps_the_parts_as_written() {
    let s = Spelling::of("LocalHost:05050/Team/cp:v1@sha256:aa");
    assert_eq!(
        s,
        Spelling {
            name: "LocalHost:05050/Team/cp",
            host: Some("LocalHost:05050"),
            path: "Team/cp",
            tag: Some("v1"),
            digest: Some("sha256:aa"),
        }
    );
    assert_eq!(s.port(), Some(5050));
    let bare = Spelling::of("busybox");
    assert_eq!((bare.name, bare.host, bare.tag), ("busybox", None, None));
    assert_eq!(Spelling::of("[::1]/x").port(), None);
    assert_eq!(Spelling::of("r:5000/x:1").name, "r:5000/x");
    assert_eq!(Spelling::of("r:5000/x").port(), Some(5000));
}

#[test]
fn the_node_local_registry_is_loopback_at_its_port() {
    let local = |image: &str| ImageRef::parse(image).unwrap().is_node_local(5050);
    for image in [
        "localhost:5050/ns/cp",
        "LOCALHOST:5050/ns/cp",
        "127.0.0.1:5050/ns/cp",
        "[0::1]:5050/ns/cp",
        "[::ffff:127.0.0.1]:5050/ns/cp",
    ] {
        assert!(local(image), "{image}");
    }
    for image in [
        "localhost:5051/ns/cp",
        "r.example:5050/ns/cp",
        "localhost/ns/cp",
    ] {
        assert!(!local(image), "{image}");
    }
    assert!(ImageRef::parse("localhost/cp").unwrap().is_node_local(443));
    assert_eq!(
        ImageRef::parse("[::1]:5050/cp").unwrap().host_and_port(),
        ("[::1]", 5050)
    );
}

#[test]
fn only_sha256_digests_name_checkpoint_images() {
    let hex = "a".repeat(64);
    let image = ImageRef::parse(&format!("localhost:5050/ns/cp:uid@sha256:{hex}")).unwrap();
    assert_eq!(image.sha256(), Some(format!("sha256:{hex}").as_str()));
    for other in [
        "localhost:5050/ns/cp:uid",
        "localhost:5050/ns/cp@sha256:00",
        "localhost:5050/ns/cp@sha512:aa",
    ] {
        assert_eq!(ImageRef::parse(other).unwrap().sha256(), None, "{other}");
        assert_eq!(Spelling::of(other).sha256(), None, "{other}");
    }
    let spelled = format!("LocalHost:5050/NS/cp@sha256:{hex}");
    assert_eq!(
        Spelling::of(&spelled).sha256(),
        Some(format!("sha256:{hex}").as_str())
    );
}
