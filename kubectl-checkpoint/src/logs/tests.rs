use super::*;

#[test]
fn targets_take_kubectls_kind_names() {
    assert_eq!(parse_target("cp1"), Ok(Target::Any("cp1".into())));
    for cc in [
        "cc/cp1",
        "containercheckpoint/cp1",
        "containercheckpoints/cp1",
    ] {
        assert_eq!(
            parse_target(cc),
            Ok(Target::Container("cp1".into())),
            "{cc}"
        );
    }
    for pc in ["pc/p", "podcheckpoint/p", "podcheckpoints/p"] {
        assert_eq!(parse_target(pc), Ok(Target::Pod("p".into())), "{pc}");
    }
    for pm in ["pm/m", "podmigration/m", "podmigrations/m"] {
        assert_eq!(parse_target(pm), Ok(Target::Migration("m".into())), "{pm}");
    }
    for bad in ["pod/app", "cc/", "", "cc/a/b", "/x"] {
        assert!(parse_target(bad).is_err(), "{bad}");
    }
}

fn failed(log: Option<&str>) -> ContainerCheckpointContentStatus {
    ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Failed),
        message: Some("the runtime could not checkpoint the container: CRIU: x".into()),
        criu_log: log.map(str::to_owned),
        ..Default::default()
    }
}

#[test]
fn one_checkpoints_log_is_printed_as_it_is() {
    let log = "(00.01) Error (criu/sk-inet.c:199): inet: Connected TCP socket\n";
    let out = render(&[Entry {
        checkpoint: "cp1".into(),
        container: None,
        content: Some(failed(Some(log))),
    }]);
    assert_eq!(out.stdout, log);
    assert!(out.stderr.is_empty());

    let unterminated = render(&[Entry {
        checkpoint: "cp1".into(),
        container: None,
        content: Some(failed(Some("last line"))),
    }]);
    assert_eq!(unterminated.stdout, "last line\n");
}

#[test]
fn a_pods_containers_each_get_a_header_or_a_note() {
    let completed = ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Completed),
        ..Default::default()
    };
    let out = render(&[
        Entry {
            checkpoint: "pc1-web".into(),
            container: Some("web".into()),
            content: Some(failed(Some("web's log\n"))),
        },
        Entry {
            checkpoint: "pc1-sidecar".into(),
            container: Some("sidecar".into()),
            content: Some(completed),
        },
        Entry {
            checkpoint: "pc1-db".into(),
            container: Some("db".into()),
            content: Some(failed(None)),
        },
        Entry {
            checkpoint: "pc1-cache".into(),
            container: Some("cache".into()),
            content: None,
        },
    ]);
    assert_eq!(
        out.stdout,
        "==> containercheckpoint/pc1-web (container web) <==\nweb's log\n"
    );
    assert_eq!(out.stderr.len(), 3, "{:?}", out.stderr);
    assert!(
        out.stderr[0].contains("kept only for failed checkpoints"),
        "{:?}",
        out.stderr
    );
    assert!(out.stderr[1].contains("not CRIU's"), "{:?}", out.stderr);
    assert!(
        out.stderr[1].contains("CRIU: x"),
        "the message says what failed"
    );
    assert!(
        out.stderr[2].contains("not on a node yet"),
        "{:?}",
        out.stderr
    );
}
