//! The parser against docker's behaviour, instruction by instruction.

use std::time::Duration;

use super::*;
use crate::ast::*;

fn p(text: &str) -> Dockerfile {
    match parse(text) {
        Ok(d) => d,
        Err(e) => panic!("{text:?}: {e}"),
    }
}

fn err(text: &str) -> ParseError {
    match parse(text) {
        Ok(d) => panic!("{text:?} parsed: {d:?}"),
        Err(e) => e,
    }
}

/// The instructions of `FROM scratch\n{text}`.
fn insts(text: &str) -> Vec<Instruction> {
    let d = p(&format!("FROM scratch\n{text}"));
    d.stages[0].instructions.iter().map(|l| l.inner.clone()).collect()
}

fn inst(text: &str) -> Instruction {
    let mut all = insts(text);
    assert_eq!(all.len(), 1, "{text:?}: {all:?}");
    all.remove(0)
}

fn run(text: &str) -> Run {
    match inst(text) {
        Instruction::Run(r) => r,
        other => panic!("{other:?}"),
    }
}

fn copy(text: &str) -> Copy {
    match inst(text) {
        Instruction::Copy(c) => c,
        other => panic!("{other:?}"),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Error's (line, column, message).
fn lcm(text: &str) -> (usize, usize, String) {
    let e = err(text);
    (e.line, e.column, e.message)
}

// ---- structure, directives, comments, continuations ----

#[test]
fn stages_meta_args_and_lines() {
    let d = p(
        "# a comment\nARG VERSION=1.36\nARG BASE\n\nFROM busybox:${VERSION} AS Build\nRUN echo hi\n\nfrom --platform=$BUILDPLATFORM scratch\ncopy --from=build /bin/sh /sh\n",
    );
    assert_eq!(d.escape, '\\');
    assert_eq!(d.syntax, None);
    assert_eq!(d.meta_args.len(), 2);
    assert_eq!(d.meta_args[0].inner, ArgDecl { name: "VERSION".into(), default: Some("1.36".into()) });
    assert_eq!(d.meta_args[0].line, 2);
    assert_eq!(d.meta_args[1].inner, ArgDecl { name: "BASE".into(), default: None });
    assert_eq!(d.stages.len(), 2);
    let (a, b) = (&d.stages[0], &d.stages[1]);
    assert_eq!((a.index, a.name.as_deref(), a.base.as_str(), a.line), (0, Some("build"), "busybox:${VERSION}", 5));
    assert_eq!(a.platform, None);
    assert_eq!(a.original, "FROM busybox:${VERSION} AS Build");
    assert_eq!(a.instructions.len(), 1);
    assert_eq!(a.instructions[0].line, 6);
    assert_eq!(a.instructions[0].original, "RUN echo hi");
    assert_eq!((b.index, b.name.as_deref(), b.base.as_str(), b.line), (1, None, "scratch", 8));
    assert_eq!(b.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(d.stage("BUILD").map(|s| s.index), Some(0));
    assert_eq!(d.stage("1").map(|s| s.index), Some(1));
    assert!(d.stage("nope").is_none());
}

#[test]
fn directives_syntax_escape_check() {
    let d = p("# syntax=docker/dockerfile:1.7\n#escape = `\n# check=skip=all\nFROM scratch\nRUN echo a `\n  b\n");
    assert_eq!(d.syntax.as_deref(), Some("docker/dockerfile:1.7"));
    assert_eq!(d.escape, '`');
    assert_eq!(run("RUN x").command, Command::Shell("x".into()));
    let r = match &d.stages[0].instructions[0].inner {
        Instruction::Run(r) => r.clone(),
        o => panic!("{o:?}"),
    };
    assert_eq!(r.command, Command::Shell("echo a   b".into()));
    assert_eq!(d.stages[0].instructions[0].end_line, 6);
}

#[test]
fn directive_after_comment_or_blank_is_a_comment() {
    // A comment ends the directives: the escape line is only a comment.
    let d = p("# hello\n# escape=`\nFROM scratch\nRUN a \\\n b\n");
    assert_eq!(d.escape, '\\');
    let d = p("\n# escape=`\nFROM scratch\n");
    assert_eq!(d.escape, '\\');
    // A directive after an instruction too.
    let d = p("FROM scratch\n# syntax=foo\n");
    assert_eq!(d.syntax, None);
}

#[test]
fn directive_errors() {
    assert_eq!(lcm("# escape=x\nFROM scratch\n"), (1, 1, "invalid escape token 'x' does not match ` or \\".into()));
    assert_eq!(
        lcm("# syntax=a\n# syntax=b\nFROM scratch\n"),
        (2, 1, "only one syntax parser directive can be used".into())
    );
}

#[test]
fn bom_is_ignored() {
    let d = p("\u{feff}# escape=`\nFROM scratch\n");
    assert_eq!(d.escape, '`');
}

#[test]
fn continuations_skip_comments_and_blank_lines() {
    let d = p(
        "FROM scratch\nRUN apt-get update \\\n# a comment in the middle\n    && apt-get install -y \\\n\n      curl\nUSER nobody\n",
    );
    let i = &d.stages[0].instructions;
    assert_eq!(
        i[0].inner,
        Instruction::Run(Run {
            command: Command::Shell("apt-get update     && apt-get install -y       curl".into()),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    assert_eq!((i[0].line, i[0].end_line), (2, 6));
    assert_eq!(i[0].original, "RUN apt-get update     && apt-get install -y       curl");
    assert_eq!((i[1].line, i[1].inner.clone()), (7, Instruction::User("nobody".into())));
}

#[test]
fn escaped_escape_is_not_a_continuation() {
    // `\\` at the end: not a continuation (docker's regex), the next line
    // is its own instruction.
    let all = insts("RUN echo a\\\\\nUSER x\n");
    assert_eq!(
        all[0],
        Instruction::Run(Run {
            command: Command::Shell("echo a\\\\".into()),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    assert_eq!(all[1], Instruction::User("x".into()));
}

#[test]
fn continuation_with_trailing_spaces_and_crlf() {
    assert_eq!(run("RUN a \\  \r\n b\r\n").command, Command::Shell("a  b".into()));
}

#[test]
fn continuation_at_end_of_file() {
    assert_eq!(run("RUN a \\").command, Command::Shell("a".into()));
}

#[test]
fn instruction_names_are_case_insensitive_and_indented() {
    let all = insts("  run a\n\tWorkDir /x\n");
    assert_eq!(
        all[0],
        Instruction::Run(Run {
            command: Command::Shell("a".into()),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    assert_eq!(all[1], Instruction::Workdir("/x".into()));
}

// ---- errors with line and column ----

#[test]
fn unknown_instruction_names_line_and_column() {
    let e = err("FROM scratch\n\n  FOO bar\n");
    assert_eq!((e.line, e.column, e.message.as_str()), (3, 3, "unknown instruction: FOO"));
    assert_eq!(e.to_string(), "Dockerfile:3:3: unknown instruction: FOO");
}

#[test]
fn unknown_flag_names_its_column() {
    assert_eq!(lcm("FROM scratch\nCOPY --link --frm=a x y\n"), (2, 13, "unknown flag: --frm".into()));
    // On a continuation line: that line, its column.
    assert_eq!(lcm("FROM scratch\nRUN --network=none \\\n  --mnt=x true\n"), (3, 3, "unknown flag: --mnt".into()));
    assert_eq!(lcm("FROM scratch\nENV --x=1 a=b\n"), (2, 5, "unknown flag: --x".into()));
}

#[test]
fn flag_value_errors() {
    assert_eq!(lcm("FROM scratch\nCOPY --from x y\n"), (2, 6, "missing a value on flag: --from".into()));
    assert_eq!(
        lcm("FROM scratch\nCOPY --link=maybe x y\n"),
        (2, 6, "expecting boolean value for flag --link, not: maybe".into())
    );
    assert_eq!(lcm("FROM scratch\nCOPY --link= x y\n"), (2, 6, "missing a value on flag: --link".into()));
    assert_eq!(lcm("FROM scratch\nCOPY --from=a --from=b x y\n"), (2, 15, "duplicate flag specified: --from".into()));
    assert_eq!(lcm("FROM scratch\nRUN --network=bridge x\n"), (2, 5, "invalid network mode \"bridge\"".into()));
    assert_eq!(lcm("FROM scratch\nRUN --security=root x\n"), (2, 5, "security \"root\" is not valid".into()));
}

#[test]
fn unterminated_heredoc_names_its_start() {
    assert_eq!(lcm("FROM scratch\nRUN cat <<EOF\nhello\nEOFX\n"), (2, 9, "unterminated heredoc".into()));
    // The second of two.
    assert_eq!(lcm("FROM scratch\nRUN cat <<A <<B\na\nA\nb\n"), (2, 13, "unterminated heredoc".into()));
}

#[test]
fn instruction_before_from_is_refused() {
    assert_eq!(lcm("ARG A\nRUN echo\nFROM scratch\n"), (2, 1, "no build stage in current context".into()));
}

#[test]
fn empty_and_stageless_files() {
    assert_eq!(err("").message, "file with no instructions");
    assert_eq!(err("# only\n\n").message, "file with no instructions");
    assert_eq!(err("ARG A=1\n").message, "dockerfile contains no stages to build");
}

#[test]
fn argument_count_errors() {
    assert_eq!(lcm("FROM\n"), (1, 1, "FROM requires either one or three arguments".into()));
    assert_eq!(lcm("FROM a b\n").2, "FROM requires either one or three arguments");
    assert_eq!(
        lcm("FROM a AS 1st\n"),
        (1, 6, "invalid name for build stage: \"1st\", name can't start with a number or contain symbols".into())
    );
    assert_eq!(
        lcm("FROM a AS x!\n").2,
        "invalid name for build stage: \"x!\", name can't start with a number or contain symbols"
    );
    assert_eq!(
        lcm("FROM scratch\nCOPY onlyone\n"),
        (
            2,
            1,
            "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
                .into()
        )
    );
    assert_eq!(
        lcm("FROM scratch\nADD\n").2,
        "ADD requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(lcm("FROM scratch\nWORKDIR\n"), (2, 1, "WORKDIR requires exactly one argument".into()));
    assert_eq!(lcm("FROM scratch\nUSER\n").2, "USER requires exactly one argument");
    assert_eq!(lcm("FROM scratch\nSTOPSIGNAL\n").2, "STOPSIGNAL requires exactly one argument");
    assert_eq!(lcm("FROM scratch\nEXPOSE\n").2, "EXPOSE requires at least one argument");
    assert_eq!(lcm("FROM scratch\nVOLUME []\n").2, "VOLUME requires at least one argument");
    assert_eq!(lcm("FROM scratch\nVOLUME [\"\"]\n").2, "VOLUME specified can not be an empty string");
    assert_eq!(lcm("FROM scratch\nARG\n").2, "ARG requires at least one argument");
    assert_eq!(lcm("FROM scratch\nARG =x\n").2, "ARG names can not be blank");
    assert_eq!(lcm("FROM scratch\nENV\n").2, "ENV requires at least one argument");
    assert_eq!(lcm("FROM scratch\nENV onlykey\n"), (2, 5, "ENV must have two arguments".into()));
    assert_eq!(
        lcm("FROM scratch\nLABEL a=b c\n"),
        (2, 7, "Syntax error - can't find = in \"c\". Must be of the form: name=value".into())
    );
    assert_eq!(lcm("FROM scratch\nENV =x\n").2, "ENV names can not be blank");
    assert_eq!(lcm("FROM scratch\nONBUILD\n").2, "ONBUILD requires at least one argument");
}

#[test]
fn json_of_non_strings_is_an_error() {
    assert_eq!(
        lcm("FROM scratch\nCMD [\"a\", 1]\n"),
        (2, 5, "when using JSON array syntax, arrays must be comprised of strings only".into())
    );
}

// ---- each instruction and form ----

#[test]
fn run_shell_and_exec_forms() {
    assert_eq!(run("RUN echo \"a b\" 'c'").command, Command::Shell("echo \"a b\" 'c'".into()));
    assert_eq!(run("RUN [\"echo\", \"a b\"]").command, Command::Exec(s(&["echo", "a b"])));
    assert_eq!(run("RUN   [ \"x\" ]  ").command, Command::Exec(s(&["x"])));
    // Not valid JSON: the shell form, as written.
    assert_eq!(run("RUN [\"echo\", 'x']").command, Command::Shell("[\"echo\", 'x']".into()));
    assert_eq!(run("RUN [echo]").command, Command::Shell("[echo]".into()));
}

#[test]
fn run_flags() {
    let r = run("RUN --network=none --security=insecure --mount=type=cache,target=/root/.cache,id=pip,sharing=locked \
--mount=type=secret,id=tok,required --mount=type=tmpfs,dst=/t,size=64m --mount=type=bind,from=build,source=/out,target=/in,rw \
--mount=type=ssh,mode=0600,uid=1000,gid=100 make");
    assert_eq!(r.network, Some(NetworkMode::None));
    assert_eq!(r.security.as_deref(), Some("insecure"));
    assert_eq!(r.command, Command::Shell("make".into()));
    let m = &r.mounts;
    assert_eq!(m.len(), 5);
    assert_eq!(
        (m[0].kind, m[0].target.as_deref(), m[0].id.as_deref()),
        (MountKind::Cache, Some("/root/.cache"), Some("pip"))
    );
    assert_eq!((m[0].sharing, m[0].readonly), (Sharing::Locked, false));
    assert_eq!(
        (m[1].kind, m[1].id.as_deref(), m[1].required, m[1].readonly),
        (MountKind::Secret, Some("tok"), true, true)
    );
    assert_eq!((m[2].kind, m[2].target.as_deref(), m[2].size), (MountKind::Tmpfs, Some("/t"), Some(64 << 20)));
    assert_eq!(m[3].kind, MountKind::Bind);
    assert_eq!(
        (m[3].from.as_deref(), m[3].source.as_deref(), m[3].target.as_deref()),
        (Some("build"), Some("/out"), Some("/in"))
    );
    assert!(!m[3].readonly);
    assert_eq!((m[4].kind, m[4].mode, m[4].uid, m[4].gid), (MountKind::Ssh, Some(0o600), Some(1000), Some(100)));
    // A bind mount is read-only unless asked otherwise.
    assert!(run("RUN --mount=target=/x true").mounts[0].readonly);
}

#[test]
fn mount_errors_name_the_flag() {
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=nfs,target=/x true\n"),
        (2, 5, "unsupported mount type \"nfs\"".into())
    );
    assert_eq!(
        lcm("FROM scratch\nRUN true\nRUN --network=host --mount=type=cache,targt=/x true\n"),
        (3, 20, "unexpected key 'targt' in 'targt=/x'".into())
    );
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=bind,mode=0644,target=/x true\n").2,
        "mode not allowed for \"bind\" type mounts"
    );
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=cache,target=/x,required true\n").2,
        "unexpected key 'required' for mount type 'cache'"
    );
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=cache,target=/x,sharing=maybe true\n").2,
        "unsupported sharing value \"maybe\""
    );
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=bind,target=/x,sharing=shared true\n").2,
        "invalid cache sharing set for bind mount"
    );
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=secret true\n").2,
        "invalid secret mount. one of source, target required"
    );
    assert_eq!(lcm("FROM scratch\nRUN --mount=type=cache,target=/x,uid=me true\n").2, "invalid value me for uid");
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=cache,from=$X,target=/x true\n").2,
        "'from' doesn't support variable expansion, define alias stage instead"
    );
    assert_eq!(
        lcm("FROM scratch\nRUN --mount=type=cache,target true\n").2,
        "invalid field 'target' must be a key=value pair"
    );
}

#[test]
fn mount_values_expand_through_parse_mount() {
    let env = |v: &str| expand(v, |k| (k == "D").then(|| "/cache".to_string()), '\\').map_err(|e| e.to_string());
    let m = parse_mount("type=cache,target=$D,id=${D}-x", env).expect("parses");
    assert_eq!((m.target.as_deref(), m.id.as_deref()), (Some("/cache"), Some("/cache-x")));
    // CSV quoting.
    let m = parse_mount("type=bind,\"target=/a,b\"", |v| Ok(v.to_string())).expect("parses");
    assert_eq!(m.target.as_deref(), Some("/a,b"));
}

#[test]
fn copy_and_add() {
    let c = copy(
        "COPY --from=build --chown=1000:1000 --chmod=755 --link --parents --exclude=*.md --exclude=tmp a b/ /dst/",
    );
    assert_eq!(c.sources, s(&["a", "b/"]));
    assert_eq!(c.dest, "/dst/");
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.chown.as_deref(), Some("1000:1000"));
    assert_eq!(c.chmod.as_deref(), Some("755"));
    assert!(c.link && c.parents);
    assert_eq!(c.exclude, s(&["*.md", "tmp"]));
    let c = copy("COPY [\"a b\", \"/c d/\"]");
    assert_eq!((c.sources, c.dest), (s(&["a b"]), "/c d/".to_string()));
    // The shell form splits on whitespace only (quotes stay).
    let c = copy("COPY \"a b\" /x");
    assert_eq!(c.sources, s(&["\"a", "b\""]));
    // Flag values may be quoted.
    assert_eq!(copy("COPY --chown=\"a b\" x y").chown.as_deref(), Some("a b"));
    let add = match inst("ADD --checksum=sha256:abc --keep-git-dir=true --chown=1 https://x/y.tar.gz /y") {
        Instruction::Add(a) => a,
        o => panic!("{o:?}"),
    };
    assert_eq!(add.checksum.as_deref(), Some("sha256:abc"));
    assert!(add.keep_git_dir);
    assert_eq!(add.copy.sources, s(&["https://x/y.tar.gz"]));
    assert_eq!(add.copy.chown.as_deref(), Some("1"));
    // ADD has no --from or --parents.
    assert_eq!(lcm("FROM scratch\nADD --from=x a b\n").2, "unknown flag: --from");
    assert_eq!(lcm("FROM scratch\nADD --parents a b\n").2, "unknown flag: --parents");
}

#[test]
fn flags_end_at_double_dash() {
    let c = copy("COPY --link -- --weird /dst");
    assert!(c.link);
    assert_eq!(c.sources, s(&["--weird"]));
}

#[test]
fn env_and_label_forms() {
    assert_eq!(
        inst("ENV A=1 B=\"two words\" C=three\\ four D="),
        Instruction::Env(kv(&[("A", "1"), ("B", "\"two words\""), ("C", "three\\ four"), ("D", ""),]))
    );
    // Legacy form: the rest of the line is the value.
    assert_eq!(inst("ENV PATH /usr/bin:/bin  and more"), Instruction::Env(kv(&[("PATH", "/usr/bin:/bin  and more")])));
    assert_eq!(
        inst("LABEL \"com.x\"=\"y z\" a='b'"),
        Instruction::Label(kv(&[("\"com.x\"", "\"y z\""), ("a", "'b'")]))
    );
    assert_eq!(inst("LABEL maintainer someone"), Instruction::Label(kv(&[("maintainer", "someone")])));
}

#[test]
fn arg_forms() {
    assert_eq!(
        inst("ARG A B=2 C=\"x y\""),
        Instruction::Arg(vec![
            ArgDecl { name: "A".into(), default: None },
            ArgDecl { name: "B".into(), default: Some("2".into()) },
            ArgDecl { name: "C".into(), default: Some("\"x y\"".into()) },
        ])
    );
}

#[test]
fn single_argument_instructions_take_the_whole_rest() {
    assert_eq!(inst("WORKDIR /a b"), Instruction::Workdir("/a b".into()));
    assert_eq!(inst("USER 1000:1000"), Instruction::User("1000:1000".into()));
    assert_eq!(inst("STOPSIGNAL SIGQUIT"), Instruction::Stopsignal("SIGQUIT".into()));
    assert_eq!(inst("MAINTAINER A <a@b>"), Instruction::Maintainer("A <a@b>".into()));
}

#[test]
fn expose_and_volume() {
    assert_eq!(inst("EXPOSE 80/tcp  ${P} 53/udp"), Instruction::Expose(s(&["80/tcp", "${P}", "53/udp"])));
    assert_eq!(inst("VOLUME /a /b"), Instruction::Volume(s(&["/a", "/b"])));
    assert_eq!(inst("VOLUME [\"/a b\", \" /c \"]"), Instruction::Volume(s(&["/a b", "/c"])));
}

#[test]
fn cmd_entrypoint_shell() {
    assert_eq!(
        inst("CMD [\"sh\", \"-c\", \"echo $HOME\"]"),
        Instruction::Cmd(Command::Exec(s(&["sh", "-c", "echo $HOME"])))
    );
    assert_eq!(inst("CMD echo $HOME"), Instruction::Cmd(Command::Shell("echo $HOME".into())));
    assert_eq!(inst("ENTRYPOINT []"), Instruction::Entrypoint(Command::Exec(vec![])));
    assert_eq!(inst("ENTRYPOINT top -b"), Instruction::Entrypoint(Command::Shell("top -b".into())));
    assert_eq!(inst("SHELL [\"/bin/bash\", \"-c\"]"), Instruction::Shell(s(&["/bin/bash", "-c"])));
    assert_eq!(
        lcm("FROM scratch\nSHELL /bin/bash -c\n"),
        (2, 7, "SHELL requires the arguments to be in JSON form".into())
    );
    assert_eq!(lcm("FROM scratch\nSHELL []\n").2, "SHELL requires at least one argument");
}

#[test]
fn healthcheck_forms() {
    assert_eq!(inst("HEALTHCHECK NONE"), Instruction::Healthcheck(Healthcheck::None));
    assert_eq!(
        inst(
            "HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=1.5s --start-interval=2s --retries=3 CMD curl -f http://x/ || exit 1"
        ),
        Instruction::Healthcheck(Healthcheck::Check {
            command: Command::Shell("curl -f http://x/ || exit 1".into()),
            interval: Some(Duration::from_secs(90)),
            timeout: Some(Duration::from_millis(500)),
            start_period: Some(Duration::from_millis(1500)),
            start_interval: Some(Duration::from_secs(2)),
            retries: Some(3),
        })
    );
    assert_eq!(
        inst("healthcheck cmd [\"/bin/check\", \"-q\"]"),
        Instruction::Healthcheck(Healthcheck::Check {
            command: Command::Exec(s(&["/bin/check", "-q"])),
            interval: None,
            timeout: None,
            start_period: None,
            start_interval: None,
            retries: None,
        })
    );
    let h = |t: &str| match inst(t) {
        Instruction::Healthcheck(h) => h.test(),
        o => panic!("{o:?}"),
    };
    assert_eq!(h("HEALTHCHECK NONE"), s(&["NONE"]));
    assert_eq!(h("HEALTHCHECK CMD [\"a\", \"b\"]"), s(&["CMD", "a", "b"]));
    assert_eq!(h("HEALTHCHECK CMD a  b"), s(&["CMD-SHELL", "a  b"]));
    assert_eq!(lcm("FROM scratch\nHEALTHCHECK NONE x\n").2, "HEALTHCHECK NONE takes no arguments");
    assert_eq!(
        lcm("FROM scratch\nHEALTHCHECK RUN x\n"),
        (2, 13, "Unknown type \"RUN\" in HEALTHCHECK (try CMD)".into())
    );
    assert_eq!(lcm("FROM scratch\nHEALTHCHECK CMD\n").2, "Missing command after HEALTHCHECK CMD");
    assert_eq!(
        lcm("FROM scratch\nHEALTHCHECK --interval=10 CMD x\n"),
        (2, 13, "time: missing unit in duration \"10\"".into())
    );
    assert_eq!(lcm("FROM scratch\nHEALTHCHECK --interval=5x CMD x\n").2, "time: unknown unit \"x\" in duration \"5x\"");
    assert_eq!(
        lcm("FROM scratch\nHEALTHCHECK --timeout=10us CMD x\n").2,
        "Interval \"timeout\" cannot be less than 1ms"
    );
    assert_eq!(
        lcm("FROM scratch\nHEALTHCHECK --interval=-1s CMD x\n").2,
        "Interval \"interval\" cannot be less than 1ms"
    );
    assert_eq!(lcm("FROM scratch\nHEALTHCHECK --retries=-1 CMD x\n").2, "--retries cannot be negative (-1)");
    assert_eq!(lcm("FROM scratch\nHEALTHCHECK --retries=x CMD x\n").2, "invalid value for --retries: \"x\"");
    assert_eq!(lcm("FROM scratch\nHEALTHCHECK --bogus=1 CMD x\n").2, "unknown flag: --bogus");
}

#[test]
fn go_durations() {
    use super::instruction::go_duration;
    assert_eq!(go_duration("0"), Ok(None));
    assert_eq!(go_duration("1h2m3s"), Ok(Some(Duration::from_secs(3723))));
    assert_eq!(go_duration(".5s"), Ok(Some(Duration::from_millis(500))));
    assert_eq!(go_duration("1\u{b5}s"), Ok(Some(Duration::from_micros(1))));
    assert_eq!(go_duration(""), Err("time: invalid duration \"\"".into()));
    assert_eq!(go_duration("s"), Err("time: invalid duration \"s\"".into()));
    assert_eq!(go_duration("."), Err("time: invalid duration \".\"".into()));
}

#[test]
fn onbuild() {
    let o = match inst("ONBUILD  RUN echo hi") {
        Instruction::Onbuild(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(o.trigger, "RUN echo hi");
    assert_eq!(
        *o.instruction,
        Instruction::Run(Run {
            command: Command::Shell("echo hi".into()),
            mounts: vec![],
            network: None,
            security: None,
            heredocs: vec![],
        })
    );
    let o = match inst("ONBUILD COPY --chown=1 . /app") {
        Instruction::Onbuild(o) => o,
        other => panic!("{other:?}"),
    };
    assert!(matches!(*o.instruction, Instruction::Copy(ref c) if c.chown.as_deref() == Some("1") && c.dest == "/app"));
    assert_eq!(
        lcm("FROM scratch\nONBUILD ONBUILD RUN x\n"),
        (2, 9, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into())
    );
    assert_eq!(lcm("FROM scratch\nONBUILD FROM x\n").2, "FROM isn't allowed as an ONBUILD trigger");
    assert_eq!(lcm("FROM scratch\nONBUILD maintainer x\n").2, "MAINTAINER isn't allowed as an ONBUILD trigger");
    assert_eq!(lcm("FROM scratch\nONBUILD BOGUS x\n"), (2, 9, "unknown instruction: BOGUS".into()));
}

// ---- heredocs ----

fn doc(name: &str, body: &str, expand: bool, strip_tabs: bool) -> Heredoc {
    Heredoc { name: name.into(), body: body.into(), expand, strip_tabs }
}

#[test]
fn run_heredoc() {
    let d = p("FROM scratch\nRUN <<EOF\necho $HOME\n  # kept\nEOF\nUSER x\n");
    let i = &d.stages[0].instructions;
    assert_eq!((i[0].line, i[0].end_line, i[0].original.as_str()), (2, 5, "RUN <<EOF"));
    let Instruction::Run(r) = &i[0].inner else { panic!() };
    assert_eq!(r.command, Command::Shell("<<EOF".into()));
    assert_eq!(r.heredocs, vec![doc("EOF", "echo $HOME\n  # kept\n", true, false)]);
    assert_eq!(i[1].inner, Instruction::User("x".into()));
    assert_eq!(i[1].line, 6);
}

#[test]
fn heredoc_variants() {
    // <<- strips leading tabs of the body and of the delimiter line.
    let r = run("RUN <<-EOF\n\techo a\n\t\techo b\n  c\n\tEOF\n");
    assert_eq!(r.heredocs, vec![doc("EOF", "echo a\necho b\n  c\n", true, true)]);
    // Quoted delimiters: no expansion.
    assert_eq!(run("RUN <<\"EOF\"\n$X\nEOF\n").heredocs, vec![doc("EOF", "$X\n", false, false)]);
    assert_eq!(run("RUN <<'E O'\n$X\nE O\n").heredocs, vec![doc("E O", "$X\n", false, false)]);
    assert_eq!(run("RUN <<E\"O\"F\nx\nEOF\n").heredocs, vec![doc("EOF", "x\n", false, false)]);
    // Several on one line, a command with them, a space after <<, a fd.
    let r = run("RUN python3 <<PY 3<< END > out\nprint(1)\nPY\nend\nEND\n");
    assert_eq!(r.command, Command::Shell("python3 <<PY 3<< END > out".into()));
    assert_eq!(r.heredocs, vec![doc("PY", "print(1)\n", true, false), doc("END", "end\n", true, false)]);
    // An empty body; CRLF endings kept in the body, not in the delimiter.
    assert_eq!(run("RUN <<EOF\nEOF\n").heredocs, vec![doc("EOF", "", true, false)]);
    assert_eq!(run("RUN <<EOF\r\na\r\nEOF\r\n").heredocs, vec![doc("EOF", "a\r\n", true, false)]);
}

#[test]
fn not_heredocs() {
    // Quoted, JSON form, herestring, instruction that takes none.
    assert!(run("RUN echo \"<<EOF\"").heredocs.is_empty());
    assert!(run("RUN [\"cat\", \"<<EOF\"]").heredocs.is_empty());
    assert!(run("RUN cat <<<word").heredocs.is_empty());
    let e = err("FROM scratch\nUSER <<EOF\nEOF\n");
    assert_eq!((e.line, e.message.as_str()), (3, "unknown instruction: EOF"));
}

#[test]
fn copy_heredoc() {
    let c = copy("COPY --chmod=755 <<EOF <<-'RUNME' /usr/local/bin/\nhello $X\nEOF\n\tno $X\nRUNME\n");
    assert!(c.sources.is_empty());
    assert_eq!(c.dest, "/usr/local/bin/");
    assert_eq!(c.heredocs, vec![doc("EOF", "hello $X\n", true, false), doc("RUNME", "no $X\n", false, true)]);
    let c = copy("COPY a <<EOF /d\nx\nEOF\n");
    assert_eq!((c.sources, c.heredocs), (s(&["a"]), vec![doc("EOF", "x\n", true, false)]));
    assert_eq!(
        lcm("FROM scratch\nCOPY a <<EOF\nx\nEOF\n"),
        (2, 6, "COPY cannot accept a heredoc as a destination".into())
    );
    // The name becomes a file name: never a path.
    assert_eq!(
        lcm("FROM scratch\nCOPY <<../../etc/x /d\nx\n../../etc/x\n"),
        (2, 6, "COPY heredoc name \"../../etc/x\" must be a plain file name".into())
    );
    assert_eq!(lcm("FROM scratch\nADD <</abs /d\nx\n/abs\n").2, "ADD heredoc name \"/abs\" must be a plain file name");
    assert_eq!(lcm("FROM scratch\nCOPY <<.. /d\nx\n..\n").2, "COPY heredoc name \"..\" must be a plain file name");
    // RUN's heredocs are the shell's: any delimiter.
    assert_eq!(run("RUN cat <<a/b\nx\na/b\n").heredocs, vec![doc("a/b", "x\n", true, false)]);
}

#[test]
fn onbuild_heredoc() {
    let o = match inst("ONBUILD RUN <<EOF\necho hi\nEOF\n") {
        Instruction::Onbuild(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(o.trigger, "RUN <<EOF\necho hi\nEOF");
    assert!(
        matches!(*o.instruction, Instruction::Run(ref r) if r.heredocs == vec![doc("EOF", "echo hi\n", true, false)])
    );
}

#[test]
fn heredoc_with_backtick_escape() {
    let d = p("# escape=`\nFROM scratch\nRUN <<EOF\nC:\\x `\nEOF\n");
    let Instruction::Run(r) = &d.stages[0].instructions[0].inner else { panic!() };
    assert_eq!(r.heredocs, vec![doc("EOF", "C:\\x `\n", true, false)]);
}

#[test]
fn heredoc_delimiter_quoting_rules() {
    // Part quoted: the name without quotes, no expansion.
    assert_eq!(run("RUN <<eo'f'\necho foo\neof\n").heredocs, vec![doc("eof", "echo foo\n", false, false)]);
    // An escaped quote is part of the name and does not stop expansion.
    assert_eq!(run("RUN <<eo\\'f\necho foo\neo'f\n").heredocs, vec![doc("eo'f", "echo foo\n", true, false)]);
    assert_eq!(run("RUN <<'e'o\\'f\necho foo\neo'f\n").heredocs, vec![doc("eo'f", "echo foo\n", false, false)]);
    // A `$` name stays as written.
    assert_eq!(run("RUN <<$EOF\n$EOF\n").heredocs, vec![doc("$EOF", "", true, false)]);
    // Spaces after << and a redirection after the word.
    let r = run("RUN <<  EOF  > foo\nEOF\n");
    assert_eq!(r.heredocs, vec![doc("EOF", "", true, false)]);
    // Bodies are read in order, whatever they contain.
    let c = copy("COPY <<X <<Y /dest\nY\nX\nX\nY\n");
    assert_eq!(c.heredocs, vec![doc("X", "Y\n", true, false), doc("Y", "X\n", true, false)]);
    // A file descriptor prefix; a comment-like body line is kept.
    let r = run("RUN 3<<EOF\n# not a comment\nEOF\n");
    assert_eq!(r.heredocs, vec![doc("EOF", "# not a comment\n", true, false)]);
    // Flags before the heredoc.
    let r = run("RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n");
    assert_eq!((r.mounts.len(), r.heredocs.clone()), (1, vec![doc("MOUNT", "echo hello\n", true, false)]));
}

#[test]
fn onbuild_triggers_parse_back() {
    for text in ["ONBUILD RUN echo hi", "ONBUILD COPY --chown=1 . /app", "ONBUILD RUN <<EOF\necho hi\nEOF\n"] {
        let Instruction::Onbuild(o) = inst(text) else { panic!("{text}") };
        let again = parse_trigger(&o.trigger).unwrap_or_else(|e| panic!("{:?}: {e}", o.trigger));
        assert_eq!(again.inner, *o.instruction, "{text}");
    }
    assert_eq!(
        parse_trigger("RUN a\nRUN b").map_err(|e| e.message),
        Err("onbuild trigger should be a single expression".into())
    );
    assert_eq!(parse_trigger("").map_err(|e| e.message), Err("onbuild trigger should be a single expression".into()));
    assert_eq!(parse_trigger("FROM x").map_err(|e| e.message), Err("FROM isn't allowed as an ONBUILD trigger".into()));
    assert_eq!(
        parse_trigger("BOGUS x").map_err(|e| (e.line, e.column, e.message)),
        Err((1, 1, "unknown instruction: BOGUS".into()))
    );
}

#[test]
fn expansion_errors_name_the_instruction_line() {
    let d = p("FROM scratch\n\nWORKDIR ${DIR:?set DIR}\n");
    let w = &d.stages[0].instructions[0];
    let Instruction::Workdir(raw) = &w.inner else { panic!() };
    let e = expand(raw, |_| None, d.escape).expect_err("unset");
    assert_eq!(
        ParseError::expansion(w, &e).to_string(),
        "Dockerfile:3:1: failed to process \"${DIR:?set DIR}\": DIR: set DIR"
    );
}
