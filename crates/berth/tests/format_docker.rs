//! `--format` templates against docker's own expectations: the cases of
//! docker/cli's formatter tests (cli/command/formatter/container_test.go,
//! image_test.go, templates/templates_test.go), written here as tables of
//! rows (docker's field names), template and the exact output docker's
//! tests expect. No daemon is needed: `berth::format::Template` is what
//! `berth ps --format` and the other listings render with.

use berth::format::Template;
use serde_json::{Map, Value, json};

fn rows(v: Value) -> Vec<Map<String, Value>> {
    v.as_array().unwrap().iter().map(|r| r.as_object().unwrap().clone()).collect()
}

/// docker's two containers of TestContainerContextWrite, as `ps` rows.
fn containers() -> Vec<Map<String, Value>> {
    rows(json!([
        {"ID": "containerID1", "Image": "ubuntu", "Command": "\"\"", "CreatedAt": "2024-05-01 10:00:00 +0000 UTC",
         "RunningFor": "24 hours ago", "Ports": "", "State": "running", "Status": "", "Names": "foobar_baz",
         "Labels": "", "Mounts": "", "Networks": "", "Size": "0B"},
        {"ID": "containerID2", "Image": "ubuntu", "Command": "\"\"", "CreatedAt": "2024-05-01 10:00:00 +0000 UTC",
         "RunningFor": "24 hours ago", "Ports": "", "State": "running", "Status": "", "Names": "foobar_bar",
         "Labels": "", "Mounts": "", "Networks": "", "Size": "0B"},
    ]))
}

/// The column heads `ps` gives (docker's containerHeaderContext).
const PS_HEADS: &[(&str, &str)] = &[("ID", "CONTAINER ID"), ("RunningFor", "CREATED")];

fn ps(template: &str, rows: &[Map<String, Value>]) -> String {
    Template::parse(template).headers(PS_HEADS).render(rows).unwrap()
}

#[test]
fn container_tables_match_dockers() {
    let c = containers();
    let cases: &[(&str, &str)] = &[
        (
            "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}",
            "CONTAINER ID   IMAGE     COMMAND   CREATED        STATUS    PORTS     NAMES\n\
             containerID1   ubuntu    \"\"        24 hours ago                       foobar_baz\n\
             containerID2   ubuntu    \"\"        24 hours ago                       foobar_bar\n",
        ),
        (
            "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}\\t{{.Size}}",
            "CONTAINER ID   IMAGE     COMMAND   CREATED        STATUS    PORTS     NAMES        SIZE\n\
             containerID1   ubuntu    \"\"        24 hours ago                       foobar_baz   0B\n\
             containerID2   ubuntu    \"\"        24 hours ago                       foobar_bar   0B\n",
        ),
        ("table {{.Image}}", "IMAGE\nubuntu\nubuntu\n"),
        ("table {{.State}}", "STATE\nrunning\nrunning\n"),
        ("{{.Image}}", "ubuntu\nubuntu\n"),
        // container-context-write-special-headers.golden: the header row
        // keeps the heads as they are through json/title/upper/lower/
        // truncate, and pads them with pad.
        (
            "table {{truncate .ID 5}}\\t{{json .Image}} {{.RunningFor}}/{{title .Status}}/{{pad .Ports 2 2}}.{{upper .Names}} {{lower .Status}}",
            "CONTAINER ID   IMAGE CREATED/STATUS/  PORTS  .NAMES STATUS\n\
             conta          \"ubuntu\" 24 hours ago//.FOOBAR_BAZ \n\
             conta          \"ubuntu\" 24 hours ago//.FOOBAR_BAR \n",
        ),
        ("table {{split .Image \":\"}}", "IMAGE\n[ubuntu]\n[ubuntu]\n"),
    ];
    for (template, want) in cases {
        assert_eq!(ps(template, &c), *want, "{template}");
    }
}

#[test]
fn no_rows_still_print_the_header() {
    // TestContainerContextWriteWithNoContainers.
    assert_eq!(ps("{{.Image}}", &[]), "");
    assert_eq!(ps("table {{.Image}}", &[]), "IMAGE\n");
    assert_eq!(ps("table {{.Image}}\t{{.Size}}", &[]), "IMAGE     SIZE\n");
    assert_eq!(ps("table {{.Image}}\\t{{.Size}}", &[]), "IMAGE     SIZE\n");
}

#[test]
fn json_of_a_row_has_dockers_keys_in_dockers_order() {
    // TestContainerContextWriteJSON: Go marshals the row as a map, so its
    // keys come sorted; `>` and `&` are not escaped (SetEscapeHTML(false)).
    let row = rows(json!([{
        "ID": "containerID1", "Names": "foobar_baz", "Image": "ubuntu", "Command": "\"\"",
        "CreatedAt": "2024-05-01 10:00:00 +0000 UTC", "RunningFor": "About a minute ago", "Ports": "0.0.0.0:2->8/udp",
        "State": "running", "Status": "", "Labels": "a=b&c", "LocalVolumes": "0", "Mounts": "", "Networks": "",
        "Size": "0B",
    }]));
    let want = r#"{"Command":"\"\"","CreatedAt":"2024-05-01 10:00:00 +0000 UTC","ID":"containerID1","Image":"ubuntu","Labels":"a=b&c","LocalVolumes":"0","Mounts":"","Names":"foobar_baz","Networks":"","Ports":"0.0.0.0:2->8/udp","RunningFor":"About a minute ago","Size":"0B","State":"running","Status":""}"#;
    assert_eq!(ps("{{json .}}", &row), format!("{want}\n"));
    assert_eq!(ps("json", &row), format!("{want}\n"), "docker's `--format json`");
    // TestParseJSONFunctions (GitHub #32120) and TestContainerContextWriteJSONField.
    assert_eq!(ps("{{json .Ports}}", &row), "\"0.0.0.0:2->8/udp\"\n");
    assert_eq!(ps("{{json .ID}}", &containers()), "\"containerID1\"\n\"containerID2\"\n");
}

#[test]
fn labels_by_key_as_docker_ps_label() {
    // TestContainerPsContext: ctx.Label("com.docker.swarm.swarm-id").
    let row = rows(json!([{"ID": "c1", "Labels": "com.docker.swarm.node_name=ubuntu,com.docker.swarm.swarm-id=33"}]));
    assert_eq!(ps("{{.Label \"com.docker.swarm.swarm-id\"}}", &row), "33\n");
    assert_eq!(ps("{{.Label \"com.docker.swarm.node_name\"}}", &row), "ubuntu\n");
    assert_eq!(ps("{{.Label \"anything.really\"}}", &row), "\n");
    // A method call anywhere a pipeline goes: piped, in parentheses, on $.
    assert_eq!(ps("{{\"com.docker.swarm.swarm-id\" | .Label}}", &row), "33\n");
    assert_eq!(ps("{{printf \"<%s>\" (.Label \"com.docker.swarm.node_name\")}}", &row), "<ubuntu>\n");
    assert_eq!(ps("{{with .ID}}{{$.Label \"com.docker.swarm.swarm-id\"}}{{end}}", &row), "33\n");
    // Labels given as an object are read as they are.
    let row = rows(json!([{"ID": "c1", "Labels": {"tier": "web,api"}}]));
    assert_eq!(ps("{{.Label \"tier\"}}", &row), "web,api\n");
    // SubHeaderContext.Label: the key's last dotted part, - and _ as blanks.
    let row = rows(json!([{"ID": "c1", "Labels": "com.example.node_name=n1"}]));
    assert_eq!(
        ps("table {{.ID}}\\t{{.Label \"com.example.node_name\"}}", &row),
        "CONTAINER ID   node name\nc1             n1\n"
    );
}

#[test]
fn docker_template_functions() {
    // templates_test.go: TestParseStringFunctions, TestParseTruncateFunction.
    let one = |s: &str| rows(json!([{ "S": s }]));
    let src = "tupx5xzf6hvsrhnruz5cr8gwp";
    let cases: &[(&str, &str)] = &[
        ("{{truncate .S 5}}", "tupx5"),
        ("{{truncate .S 25}}", src),
        ("{{truncate .S 30}}", src),
        ("{{pad .S 3 3}}", "   tupx5xzf6hvsrhnruz5cr8gwp   "),
    ];
    for (template, want) in cases {
        assert_eq!(ps(template, &one(src)), format!("{want}\n"), "{template}");
        assert_eq!(ps(template, &one("")), "\n", "{template} of an empty string");
    }
    assert_eq!(ps("{{join (split .S \":\") \"/\"}}", &one("text:with:colon")), "text/with/colon\n");
    assert_eq!(
        ps("{{title .S}}|{{upper .S}}|{{lower .S}}", &one("hello wORLD-x_y")),
        "Hello WORLD-X_y|HELLO WORLD-X_Y|hello world-x_y\n"
    );
    // TestContainerContextIPAddresses: a list prints as Go prints a slice.
    let row = rows(json!([{"IPAddresses": ["one:192.168.1.2", "two:192.168.178.2"]}]));
    assert_eq!(ps("{{.IPAddresses}}", &row), "[one:192.168.1.2 two:192.168.178.2]\n");
}

#[test]
fn full_go_templates() {
    let row = rows(json!([{"Names": "web,api", "Status": "Up 2 hours", "Ports": "", "Size": 3}]));
    let cases: &[(&str, &str)] = &[
        ("{{range $i, $n := split .Names \",\"}}{{if $i}} {{end}}<{{$n}}>{{end}}", "<web> <api>"),
        ("{{if .Ports}}{{.Ports}}{{else}}no ports{{end}}", "no ports"),
        ("{{with .Status}}{{.}}{{end}}", "Up 2 hours"),
        ("{{len .Names}} {{index (split .Names \",\") 1}} {{printf \"%05d\" .Size}}", "7 api 00003"),
        ("{{if eq .Size 3}}three{{else if gt .Size 3}}more{{end}}", "three"),
        ("{{- /* a comment */ -}} {{.Names -}} !", "web,api!"),
        ("{{define \"n\"}}[{{.}}]{{end}}{{template \"n\" .Status}}", "[Up 2 hours]"),
        ("{{range split .Names \",\"}}{{.}}{{break}}{{end}}", "web"),
        ("{{println .Status}}", "Up 2 hours\n"),
    ];
    for (template, want) in cases {
        assert_eq!(ps(template, &row), format!("{want}\n"), "{template}");
    }
}

#[test]
fn image_tables_match_dockers() {
    // TestImageContextWrite's images, with `images`' column heads.
    let images = rows(json!([
        {"Repository": "image", "Tag": "tag1", "ID": "imageID1", "CreatedSince": "24 hours ago", "Size": "0B",
         "Digest": "sha256:cbbf2f9a99b47fc460d422812b6a5adff7dfee951d8fa2e4a98caa0382cfbdbf"},
        {"Repository": "image", "Tag": "tag2", "ID": "imageID2", "CreatedSince": "N/A", "Size": "0B", "Digest": "<none>"},
        {"Repository": "<none>", "Tag": "<none>", "ID": "imageID3", "CreatedSince": "24 hours ago", "Size": "0B",
         "Digest": "<none>"},
    ]));
    let heads = [("ID", "IMAGE ID"), ("CreatedSince", "CREATED")];
    let render = |t: &str| Template::parse(t).headers(&heads).render(&images).unwrap();
    assert_eq!(
        render("table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}"),
        "REPOSITORY   TAG       IMAGE ID   CREATED        SIZE\n\
         image        tag1      imageID1   24 hours ago   0B\n\
         image        tag2      imageID2   N/A            0B\n\
         <none>       <none>    imageID3   24 hours ago   0B\n"
    );
    assert_eq!(
        render("table {{.Repository}}\\t{{.Tag}}\\t{{.Digest}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}"),
        "REPOSITORY   TAG       DIGEST                                                                    IMAGE ID   CREATED        SIZE\n\
         image        tag1      sha256:cbbf2f9a99b47fc460d422812b6a5adff7dfee951d8fa2e4a98caa0382cfbdbf   imageID1   24 hours ago   0B\n\
         image        tag2      <none>                                                                    imageID2   N/A            0B\n\
         <none>       <none>    <none>                                                                    imageID3   24 hours ago   0B\n"
    );
    assert_eq!(
        render("table {{.Digest}}"),
        "DIGEST\nsha256:cbbf2f9a99b47fc460d422812b6a5adff7dfee951d8fa2e4a98caa0382cfbdbf\n<none>\n<none>\n"
    );
    // docker's raw format: a template with real newlines, a blank line after each row.
    assert_eq!(
        render("repository: {{ .Repository }}\ntag: {{.Tag}}\n"),
        "repository: image\ntag: tag1\n\nrepository: image\ntag: tag2\n\nrepository: <none>\ntag: <none>\n\n"
    );
}

#[test]
fn errors_read_as_dockers() {
    // TestContainerContextWrite's error cases.
    let c = containers();
    let e = Template::parse("{{InvalidFunction}}").render(&c).unwrap_err().to_string();
    assert_eq!(e, "template parsing error: template: :1: function \"InvalidFunction\" not defined");
    // Found when parsing, as Go's parser does: even with no rows.
    assert!(Template::parse("{{InvalidFunction}}").render(&[]).is_err());
    let e = Template::parse("{{nil}}").render(&c).unwrap_err().to_string();
    assert!(e.starts_with("template parsing error: ") && e.contains("nil is not a command"), "{e}");
    let e = Template::parse("{{.Nope}}").render(&c).unwrap_err().to_string();
    assert!(e.contains("Nope") && e.contains("Names"), "names the field and those there are: {e}");
    let e = Template::parse("{{.ID").render(&c).unwrap_err().to_string();
    assert!(e.starts_with("template parsing error: template: "), "{e}");
}

#[test]
fn inspect_formats_over_whole_documents() {
    // `docker inspect -f` runs over the decoded JSON: nested fields, json of
    // a part, range, and <no value> for a key a map lacks.
    let doc = json!({
        "Id": "abc", "Name": "/web",
        "Config": {"Image": "busybox", "Labels": {"b": "2", "a": "1"}, "Env": ["A=1", "B=2"]},
        "Mounts": [{"Source": "/x"}, {"Source": "/y"}],
        "State": {"Running": true, "Pid": 42},
    });
    let render = |t: &str| Template::parse(t).render_values(std::slice::from_ref(&doc)).unwrap();
    assert_eq!(render("{{.Config.Image}}"), "busybox\n");
    assert_eq!(render("{{json .Config.Labels}}"), "{\"a\":\"1\",\"b\":\"2\"}\n");
    assert_eq!(render("{{range .Mounts}}{{.Source}} {{end}}"), "/x /y \n");
    assert_eq!(render("{{.State.Running}} {{.State.Pid}}"), "true 42\n");
    assert_eq!(render("{{index .Config.Labels \"a\"}}"), "1\n");
    assert_eq!(render("{{join .Config.Env \",\"}}"), "A=1,B=2\n");
    assert_eq!(render("{{.Config.Nope}}"), "<no value>\n");
    assert_eq!(render("{{.Config.Labels}}"), "map[a:1 b:2]\n");
}
