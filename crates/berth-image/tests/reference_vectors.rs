//! Image references on docker's own test vectors: distribution/reference's
//! reference_test.go (TestReferenceParse) and normalize_test.go
//! (TestValidateReferenceName, TestValidateRemoteName,
//! TestParseRepositoryInfo, TestParseReferenceWithTagAndDigest,
//! TestParseAnyReference, TestNormalizedSplitHostname, TestParseDockerRef),
//! as tables. berth parses as `ParseNormalizedNamed` does, and adds the
//! tag `latest` when there is neither tag nor digest (docker's
//! `TagNameOnly`), so TestReferenceParse's un-normalized expectations are
//! written here normalized.

use berth_image::Reference;

const FF: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const DB: &str = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

/// What a reference parses to: registry, repository, tag, digest.
type Parts<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

fn parts(s: &str) -> Result<(String, String, Option<String>, Option<String>), String> {
    let r = Reference::parse(s).map_err(|e| e.to_string())?;
    Ok((
        r.registry().to_string(),
        r.repository().to_string(),
        r.tag().map(str::to_string),
        r.digest().map(|d| d.to_string()),
    ))
}

fn check(input: &str, want: Result<Parts, &str>) {
    match (parts(input), want) {
        (Ok(got), Ok((reg, repo, tag, digest))) => {
            let want = (reg.to_string(), repo.to_string(), tag.map(str::to_string), digest.map(str::to_string));
            assert_eq!(got, want, "{input:?}");
        }
        (Err(e), Err(reason)) => assert!(e.contains(reason), "{input:?}: error {e:?} does not say {reason:?}"),
        (got, want) => panic!("{input:?}: got {got:?}, docker: {want:?}"),
    }
}

#[test]
fn reference_test_parse_vectors() {
    let a255 = "a".repeat(255);
    let owned = [
        ("example.com/".to_string() + &a255 + ":tag", Ok(("example.com", a255.as_str(), Some("tag"), None))),
        ("domain/".to_string() + &"a".repeat(256) + ":tag", Err("too long")),
    ];
    let deep = "a/".repeat(127) + "a";
    let deep_input = format!("{deep}:tag-puts-this-over-max");
    let with_digest = |s: &str| format!("{s}@{FF}");
    let cases: Vec<(String, Result<Parts, &str>)> = vec![
        ("test_com".into(), Ok(("docker.io", "library/test_com", Some("latest"), None))),
        ("test.com:tag".into(), Ok(("docker.io", "library/test.com", Some("tag"), None))),
        ("test.com:5000".into(), Ok(("docker.io", "library/test.com", Some("5000"), None))),
        ("test.com/repo:tag".into(), Ok(("test.com", "repo", Some("tag"), None))),
        ("test:5000/repo".into(), Ok(("test:5000", "repo", Some("latest"), None))),
        ("test:5000/repo:tag".into(), Ok(("test:5000", "repo", Some("tag"), None))),
        (with_digest("test:5000/repo"), Ok(("test:5000", "repo", None, Some(FF)))),
        (with_digest("test:5000/repo:tag"), Ok(("test:5000", "repo", Some("tag"), Some(FF)))),
        ("".into(), Err("empty")),
        (":justtag".into(), Err("")),
        (format!("@{FF}"), Err("")),
        ("repo@sha256:ffffffffffffffffffffffffffffffffff".into(), Err("digest")),
        (format!("validname@invaliddigest:{}", &FF[7..]), Err("digest")),
        (format!("validname@sha512:{}", "f".repeat(128)), Err("digest")),
        ("Uppercase:tag".into(), Err("lowercase")),
        ("test:5000/Uppercase/lowercase:tag".into(), Err("lowercase")),
        ("lowercase:Uppercase".into(), Ok(("docker.io", "library/lowercase", Some("Uppercase"), None))),
        (deep_input, Ok(("docker.io", deep.as_str(), Some("tag-puts-this-over-max"), None))),
        ("aa/asdf$$^/aa".into(), Err("")),
        ("sub-dom1.foo.com/bar/baz/quux".into(), Ok(("sub-dom1.foo.com", "bar/baz/quux", Some("latest"), None))),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
            Ok(("sub-dom1.foo.com", "bar/baz/quux", Some("some-long-tag"), None)),
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com".into(),
            Ok(("b.gcr.io", "test.example.com/my-app", Some("test.example.com"), None)),
        ),
        ("xn--n3h.com/myimage:xn--n3h.com".into(), Ok(("xn--n3h.com", "myimage", Some("xn--n3h.com"), None))),
        (
            with_digest("xn--7o8h.com/myimage:xn--7o8h.com"),
            Ok(("xn--7o8h.com", "myimage", Some("xn--7o8h.com"), Some(FF))),
        ),
        ("foo_bar.com:8080".into(), Ok(("docker.io", "library/foo_bar.com", Some("8080"), None))),
        ("foo/foo_bar.com:8080".into(), Ok(("docker.io", "foo/foo_bar.com", Some("8080"), None))),
        ("192.168.1.1".into(), Ok(("docker.io", "library/192.168.1.1", Some("latest"), None))),
        ("192.168.1.1:tag".into(), Ok(("docker.io", "library/192.168.1.1", Some("tag"), None))),
        ("192.168.1.1:5000".into(), Ok(("docker.io", "library/192.168.1.1", Some("5000"), None))),
        ("192.168.1.1/repo".into(), Ok(("192.168.1.1", "repo", Some("latest"), None))),
        ("192.168.1.1:5000/repo".into(), Ok(("192.168.1.1:5000", "repo", Some("latest"), None))),
        ("192.168.1.1:5000/repo:5050".into(), Ok(("192.168.1.1:5000", "repo", Some("5050"), None))),
        ("[2001:db8::1]".into(), Err("")),
        ("[2001:db8::1]:5000".into(), Err("")),
        ("[2001:db8::1]:tag".into(), Err("")),
        ("[2001:db8::1]/repo".into(), Ok(("[2001:db8::1]", "repo", Some("latest"), None))),
        ("[2001:db8:1:2:3:4:5:6]/repo:tag".into(), Ok(("[2001:db8:1:2:3:4:5:6]", "repo", Some("tag"), None))),
        ("[2001:db8::1]:5000/repo".into(), Ok(("[2001:db8::1]:5000", "repo", Some("latest"), None))),
        ("[2001:db8::1]:5000/repo:tag".into(), Ok(("[2001:db8::1]:5000", "repo", Some("tag"), None))),
        (with_digest("[2001:db8::1]:5000/repo"), Ok(("[2001:db8::1]:5000", "repo", None, Some(FF)))),
        (with_digest("[2001:db8::1]:5000/repo:tag"), Ok(("[2001:db8::1]:5000", "repo", Some("tag"), Some(FF)))),
        ("[2001:db8::]:5000/repo".into(), Ok(("[2001:db8::]:5000", "repo", Some("latest"), None))),
        ("[::1]:5000/repo".into(), Ok(("[::1]:5000", "repo", Some("latest"), None))),
        ("[fe80::1%eth0]:5000/repo".into(), Err("")),
        ("[fe80::1%@invalidzone]:5000/repo".into(), Err("")),
    ];
    for (input, want) in cases.iter().map(|(i, w)| (i.as_str(), *w)).chain(owned.iter().map(|(i, w)| (i.as_str(), *w)))
    {
        check(input, want);
    }
}

#[test]
fn normalize_test_valid_and_invalid_names() {
    let valid = [
        "docker/docker",
        "library/debian",
        "debian",
        "localhost/library/debian",
        "localhost/debian",
        "LOCALDOMAIN/library/debian",
        "LOCALDOMAIN/debian",
        "docker.io/docker/docker",
        "docker.io/library/debian",
        "docker.io/debian",
        "index.docker.io/docker/docker",
        "index.docker.io/library/debian",
        "index.docker.io/debian",
        "127.0.0.1:5000/docker/docker",
        "127.0.0.1:5000/library/debian",
        "127.0.0.1:5000/debian",
        "192.168.0.1",
        "192.168.0.1:80",
        "192.168.0.1:8/debian",
        "192.168.0.2:25000/debian",
        "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
        "[fc00::1]:5000/docker",
        "[fc00::1]:5000/docker/docker",
        "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
        "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        "Docker/docker",
        "DOCKER/docker",
        // TestValidateRemoteName
        "docker-rules/docker",
        "docker---rules/docker",
        "doc/docker",
        "d/docker",
        "jess/t",
        "dock__er/docker",
    ];
    for name in valid {
        assert!(Reference::parse(name).is_ok(), "docker accepts {name:?}: {:?}", Reference::parse(name));
    }
    let long_namespace = "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_".repeat(4) + "/docker";
    let invalid = [
        "https://github.com/docker/docker",
        "docker/Docker",
        "-docker",
        "-docker/docker",
        "-docker.io/docker/docker",
        "docker///docker",
        "docker.io/docker/Docker",
        "docker.io/docker///docker",
        "[fc00::1]",
        "[fc00::1]:5000",
        "fc00::1:5000/debian",
        "[fe80::1%eth0]:5000/debian",
        "[2001:db8:3:4::192.0.2.33]:5000/debian",
        "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
        // TestValidateRemoteName
        "docker-/docker",
        "-docker-/docker",
        "____/____",
        "_docker/_docker",
        "dock..er/docker",
        "dock_.er/docker",
        "dock-.er/docker",
        "docker/",
        &long_namespace,
    ];
    for name in invalid {
        assert!(Reference::parse(name).is_err(), "docker refuses {name:?}, berth took {:?}", Reference::parse(name));
    }
    let e = Reference::parse("1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a").unwrap_err();
    assert!(e.to_string().contains("64-byte hexadecimal"), "{e}");
}

#[test]
fn normalize_test_repository_info_and_familiar_names() {
    // (remote name, familiar name, full name, ambiguous name, domain)
    let cases = [
        ("fooo", "localhost/fooo", "localhost/fooo", "localhost/fooo", "localhost"),
        ("fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", "localhost/fooo/bar", "localhost"),
        ("fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN/fooo", "LOCALDOMAIN"),
        ("fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN/fooo/bar", "LOCALDOMAIN"),
        ("fooo/bar", "fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar", "docker.io"),
        ("library/ubuntu", "ubuntu", "docker.io/library/ubuntu", "library/ubuntu", "docker.io"),
        ("nonlibrary/ubuntu", "nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu", "", "docker.io"),
        ("other/library", "other/library", "docker.io/other/library", "", "docker.io"),
        (
            "private/moonbase",
            "127.0.0.1:8000/private/moonbase",
            "127.0.0.1:8000/private/moonbase",
            "",
            "127.0.0.1:8000",
        ),
        ("privatebase", "127.0.0.1:8000/privatebase", "127.0.0.1:8000/privatebase", "", "127.0.0.1:8000"),
        ("private/moonbase", "example.com/private/moonbase", "example.com/private/moonbase", "", "example.com"),
        ("privatebase", "example.com/privatebase", "example.com/privatebase", "", "example.com"),
        (
            "private/moonbase",
            "example.com:8000/private/moonbase",
            "example.com:8000/private/moonbase",
            "",
            "example.com:8000",
        ),
        ("privatebasee", "example.com:8000/privatebasee", "example.com:8000/privatebasee", "", "example.com:8000"),
        (
            "library/ubuntu-12.04-base",
            "ubuntu-12.04-base",
            "docker.io/library/ubuntu-12.04-base",
            "index.docker.io/library/ubuntu-12.04-base",
            "docker.io",
        ),
        ("library/foo", "foo", "docker.io/library/foo", "docker.io/foo", "docker.io"),
        ("library/foo/bar", "library/foo/bar", "docker.io/library/foo/bar", "", "docker.io"),
        ("store/foo/bar", "store/foo/bar", "docker.io/store/foo/bar", "", "docker.io"),
        ("bar", "Foo/bar", "Foo/bar", "", "Foo"),
        ("bar", "FOO/bar", "FOO/bar", "", "FOO"),
    ];
    for (remote, familiar, full, ambiguous, domain) in cases {
        for input in [familiar, full, ambiguous].into_iter().filter(|s| !s.is_empty()) {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(r.familiar_name(), familiar, "familiar name of {input:?}");
            assert_eq!(r.name(), full, "full name of {input:?}");
            assert_eq!(r.registry(), domain, "domain of {input:?}");
            assert_eq!(r.repository(), remote, "remote name of {input:?}");
        }
    }
}

#[test]
fn normalize_test_tag_and_digest_any_reference_and_split_hostname() {
    // TestParseReferenceWithTagAndDigest.
    let short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
    let r = Reference::parse(short).unwrap();
    assert_eq!(r.to_string(), format!("docker.io/library/{short}"));
    assert_eq!((r.tag(), r.digest().map(|d| d.to_string())), (Some("latest"), Some(short[15..].to_string())));
    // TestParseAnyReference's named references (a bare 64-hex string is an
    // image ID there; berth's references refuse it, as ParseNormalizedNamed).
    for (input, equivalent) in [
        ("redis", "docker.io/library/redis:latest"),
        ("redis:latest", "docker.io/library/redis:latest"),
        ("docker.io/library/redis:latest", "docker.io/library/redis:latest"),
        (&format!("redis@{DB}"), &format!("docker.io/library/redis@{DB}")),
        (&format!("docker.io/library/redis@{DB}"), &format!("docker.io/library/redis@{DB}")),
        ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest"),
        ("dmcgowan/myapp:latest", "docker.io/dmcgowan/myapp:latest"),
        ("docker.io/mcgowan/myapp:latest", "docker.io/mcgowan/myapp:latest"),
        (&format!("dmcgowan/myapp@{DB}"), &format!("docker.io/dmcgowan/myapp@{DB}")),
        (&format!("docker.io/dmcgowan/myapp@{DB}"), &format!("docker.io/dmcgowan/myapp@{DB}")),
        (&DB[7..70], &format!("docker.io/library/{}:latest", &DB[7..70])),
        ("dbcc1", "docker.io/library/dbcc1:latest"),
    ] {
        assert_eq!(Reference::parse(input).map(|r| r.to_string()).ok().as_deref(), Some(equivalent), "{input:?}");
    }
    assert!(Reference::parse(&DB[7..]).is_err(), "a bare image ID");
    // TestNormalizedSplitHostname.
    for (input, domain, path) in [
        ("test.com/foo", "test.com", "foo"),
        ("test_com/foo", "docker.io", "test_com/foo"),
        ("docker/migrator", "docker.io", "docker/migrator"),
        ("test.com:8080/foo", "test.com:8080", "foo"),
        ("test-com:8080/foo", "test-com:8080", "foo"),
        ("foo", "docker.io", "library/foo"),
        ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo"),
        ("docker.io/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo", "docker.io", "library/foo"),
        ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
    ] {
        let r = Reference::parse(input).unwrap();
        assert_eq!((r.registry(), r.repository()), (domain, path), "{input:?}");
    }
}

#[test]
fn parse_docker_ref_vectors() {
    // TestParseDockerRef (containerd's normalization): the same names; where
    // it drops the tag of a tag+digest reference, berth keeps both and asks
    // the registry for the digest.
    let d = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
    for (input, expected) in [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:latest", "docker.io/library/busybox:latest"),
        (&format!("busybox@{d}"), &format!("docker.io/library/busybox@{d}")),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox:latest", "docker.io/library/busybox:latest"),
        ("library/busybox:latest", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
    ] {
        assert_eq!(Reference::parse(input).unwrap().to_string(), expected, "{input:?}");
    }
    let r = Reference::parse(&format!("gcr.io/library/busybox:latest@{d}")).unwrap();
    assert_eq!(r.with_digest(r.digest().unwrap().clone()).to_string(), format!("gcr.io/library/busybox@{d}"));
    assert_eq!(r.manifest_reference(), d);
}
