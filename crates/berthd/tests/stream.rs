//! The streaming server (Exec, Attach, PortForward) driven by the real
//! crictl v1.36 and by clients written here, over SPDY and WebSocket.
//!
//! The protocol and limit tests run berthd with the TEST-ONLY host
//! streamer (`[stream] debug_host_streamer_dir`, [`Env`]): a "container"
//! is a directory of the test's and its commands run on the host there.
//! The `engine_*` tests run berthd as it ships ([`EngineEnv`]): on the
//! engine's containers, made by the `berth` CLI on berthd's root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_cri_api::v1;
use berth_testkit::cri::Berthd;
use berth_testkit::workspace_bin;

static RT: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap()
});

/// A berthd with the host streamer over `containers/`, where the test
/// makes its "containers" (directories).
struct Env {
    d: Berthd,
    containers: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        Env::start_with("")
    }

    /// With more `[stream]` settings (TOML lines).
    fn start_with(stream: &str) -> Env {
        let containers = tempfile::Builder::new().prefix("berthd-stream-").tempdir().unwrap();
        let dir = containers.path().join("c");
        std::fs::create_dir(&dir).unwrap();
        let d = Berthd::start(&format!("[stream]\ndebug_host_streamer_dir = \"{}\"\n{stream}\n", dir.display()));
        Env { d, containers }
    }

    /// A new "container": its directory.
    fn container(&self, id: &str) -> PathBuf {
        let p = self.containers.path().join("c").join(id);
        std::fs::create_dir(&p).unwrap();
        p
    }

    fn crictl(&self) -> Command {
        self.d.crictl_cmd()
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        crictl_run(&self.d, args, stdin)
    }
}

/// crictl `args` on `d`, with `stdin` written to it if given.
fn crictl_run(d: &Berthd, args: &[&str], stdin: Option<&str>) -> Output {
    let mut c = d.crictl_cmd();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().expect("run crictl");
    if let Some(input) = stdin {
        // From a thread: crictl's output is read only at the end.
        let mut w = child.stdin.take().unwrap();
        let input = input.to_string();
        std::thread::spawn(move || w.write_all(input.as_bytes()));
    }
    wait_output(child, Duration::from_secs(60), &format!("crictl {args:?}"))
}

/// The child's output, read as it comes; killed (by its PID) if it runs
/// longer than `limit`.
fn wait_output(mut child: std::process::Child, limit: Duration, what: &str) -> Output {
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let stdout = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + limit;
    let mut hung = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output { status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() };
    if hung {
        let tail = |b: &[u8]| s(&b[b.len().saturating_sub(300)..]);
        panic!(
            "{what} hung; stdout ({} bytes) ends {:?}; stderr {:?}",
            out.stdout.len(),
            tail(&out.stdout),
            s(&out.stderr)
        );
    }
    out
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

#[test]
fn exec_splits_stdout_and_stderr_and_reports_the_exit_code() {
    let e = Env::start();
    let dir = e.container("c1");
    for t in TRANSPORTS {
        let out = e.run(&["exec", "--transport", t, "c1", "sh", "-c", "echo out; pwd; echo err >&2; exit 3"], None);
        // crictl exits 1 on any error; the exit code is in its message.
        assert_eq!(out.status.code(), Some(1), "{t}: {out:?}");
        assert_eq!(s(&out.stdout), format!("out\n{}\n", dir.display()), "{t}");
        let err = s(&out.stderr);
        assert!(err.starts_with("err\n"), "{t}: {err}");
        assert!(err.contains("command terminated with exit code 3"), "{t}: {err}");
        let ok = e.run(&["exec", "--transport", t, "c1", "sh", "-c", "echo fine"], None);
        assert!(ok.status.success(), "{t}: {ok:?}");
        assert_eq!(s(&ok.stdout), "fine\n", "{t}");
        assert_eq!(s(&ok.stderr), "", "{t}");
    }
}

#[test]
fn exec_passes_stdin_through_until_its_end() {
    let e = Env::start();
    e.container("c2");
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    for t in TRANSPORTS {
        let out = e.run(&["exec", "-i", "--transport", t, "c2", "cat"], Some(&input));
        assert!(out.status.success(), "{t}: {}", s(&out.stderr));
        assert!(out.stdout == input.as_bytes(), "{t}: {} bytes back of {}", out.stdout.len(), input.len());
        // The command sees the end of stdin: wc counts every line.
        let out = e.run(&["exec", "-i", "--transport", t, "c2", "wc", "-l"], Some(&input));
        assert_eq!(s(&out.stdout).trim(), "20000", "{t}: {}", s(&out.stderr));
    }
}

#[test]
fn exec_with_a_tty_gives_the_command_a_terminal_of_the_clients_size() {
    let e = Env::start();
    e.container("c3");
    for t in TRANSPORTS {
        // script gives crictl a terminal (crictl -t refuses without one).
        let mut crictl = e.crictl();
        crictl.args(["exec", "-it", "--transport", t, "c3", "sh", "-c", "tty; stty size; exit 5"]);
        let line = std::iter::once(crictl.get_program())
            .chain(crictl.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let child = Command::new("script")
            .args(["-qec", &format!("stty cols 101 rows 33; {line}"), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(60), &line);
        let text = s(&out.stdout);
        assert!(text.contains("/dev/pts/"), "{t}: {text:?} {:?}", s(&out.stderr));
        assert!(text.contains("33 101"), "{t}: the terminal size did not reach the command: {text:?}");
        assert!(text.contains("exit code 5"), "{t}: {text:?}");
    }
}

/// A listener on the host's loopback that answers each line with
/// `pong: LINE` and then closes; its port.
fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_ok() {
                    let _ = (&c).write_all(format!("pong: {line}").as_bytes());
                }
            });
        }
    });
    port
}

/// crictl port-forward running until dropped (killed by its PID).
struct Forward(std::process::Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts crictl port-forward to `remote` and returns it with the local port it
/// printed ("Forwarding from 127.0.0.1:LOCAL -> REMOTE").
fn port_forward(e: &Env, transport: &str, pod: &str, remote: u16) -> (Forward, u16) {
    let mut child = e
        .crictl()
        .args(["port-forward", "--transport", transport, pod, &format!(":{remote}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let fwd = Forward(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // Keep reading: crictl logs each connection there, and dies of
    // SIGPIPE if nobody does.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let local = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("crictl port-forward printed {line:?}"));
    (fwd, local)
}

fn ask(local: u16, line: &str) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", local)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(line.as_bytes()).unwrap();
    let mut got = Vec::new();
    match c.read_to_end(&mut got) {
        Ok(_) => {}
        // crictl may reset the connection once the remote side is done.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read from the forwarded port: {e}"),
    }
    s(&got)
}

#[test]
fn port_forward_carries_bytes_both_ways() {
    let e = Env::start();
    e.container("pod1");
    let port = echo_server();
    for t in TRANSPORTS {
        let (_fwd, local) = port_forward(&e, t, "pod1", port);
        // Two connections through one forward: each is its own stream pair.
        assert_eq!(ask(local, "ping 1\n"), "pong: ping 1\n", "{t}");
        assert_eq!(ask(local, "ping 2\n"), "pong: ping 2\n", "{t}");
    }
}

#[test]
fn port_forward_to_a_closed_port_reports_the_error() {
    let e = Env::start();
    e.container("pod2");
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (mut fwd, local) = port_forward(&e, "spdy", "pod2", closed);
    let got = ask(local, "ping\n");
    assert_eq!(got, "");
    let _ = fwd.0.kill();
    let mut err = String::new();
    fwd.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains(&format!("error forwarding port {closed} to pod pod2")), "{err}");
    assert!(err.contains("Connection refused") || err.contains("connection refused"), "{err}");
}

#[test]
fn unknown_containers_and_pods_are_not_found() {
    let e = Env::start();
    let out = e.run(&["exec", "nope", "true"], None);
    assert!(!out.status.success());
    assert!(s(&out.stderr).contains("NotFound desc = container \\\"nope\\\" not found"), "{}", s(&out.stderr));
    let out = e.run(&["port-forward", "nopod", ":80"], None);
    assert!(s(&out.stderr).contains("pod sandbox \\\"nopod\\\" not found"), "{}", s(&out.stderr));
    // A path that escapes the directory is no container either.
    let out = e.run(&["exec", "..", "true"], None);
    assert!(s(&out.stderr).contains("not found"), "{}", s(&out.stderr));
}

#[test]
fn attach_failures_come_back_on_the_error_stream() {
    let e = Env::start();
    e.container("c4");
    for t in TRANSPORTS {
        let out = e.run(&["attach", "--transport", t, "c4"], None);
        assert!(!out.status.success(), "{t}");
        let err = s(&out.stderr);
        assert!(err.contains("error attaching to container"), "{t}: {err}");
        assert!(err.contains("runs no container process to attach to"), "{t}: {err}");
    }
}

/// A raw HTTP request on the streaming server; the status line.
fn http_status(url: &str, upgrade: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut c = TcpStream::connect(host).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut line = String::new();
    BufReader::new(c).read_line(&mut line).unwrap();
    line.trim_end().to_string()
}

#[test]
fn a_token_is_single_use() {
    let e = Env::start();
    e.container("c5");
    let out = e.run(&["--debug", "exec", "c5", "true"], None);
    assert!(out.status.success(), "{}", s(&out.stderr));
    let err = s(&out.stderr);
    // crictl logs the response: url:"http://127.0.0.1:PORT/exec/TOKEN".
    let url = err
        .split("url:\\\"")
        .nth(1)
        .or_else(|| err.split("url:\"").nth(1))
        .and_then(|r| r.split(['"', '\\']).next())
        .unwrap_or_else(|| panic!("no URL in crictl's log: {err}"));
    assert!(url.contains("/exec/"), "{url}");
    assert_eq!(http_status(url, "SPDY/3.1"), "HTTP/1.1 404 Not Found");
    // Neither is a made-up token, nor a token on the wrong path.
    let made_up = format!("{}/exec/{}", url.rsplit_once("/exec/").unwrap().0, "0".repeat(32));
    assert_eq!(http_status(&made_up, "SPDY/3.1"), "HTTP/1.1 404 Not Found");
}

/// Kills a host process by PID when dropped (cleanup when a test fails).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0), nix::sys::signal::Signal::SIGKILL);
    }
}

/// Whether `pid` still runs (a zombie has ended).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|st| st.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

fn poll(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what}: not within 20 s");
}

#[test]
fn a_client_that_leaves_stops_its_command() {
    let e = Env::start();
    let dir = e.container("c6");
    for t in TRANSPORTS {
        let pidfile = dir.join(format!("pid-{t}"));
        let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
        let mut client = e
            .crictl()
            .args(["exec", "--transport", t, "c6", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        poll("the command writes its PID", || std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n')));
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let _guard = KillOnDrop(pid);
        assert!(running(pid), "{t}");
        client.kill().unwrap();
        client.wait().unwrap();
        poll(&format!("{t}: the command of a client that left is killed"), || !running(pid));
    }
}

/// A CRI runtime client on berthd's socket, for requests crictl cannot make.
async fn runtime_client(d: &Berthd) -> v1::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel> {
    let sock = d.socket();
    let channel = tonic::transport::Endpoint::from_static("http://berthd")
        .connect_with_connector(tower::service_fn(move |_| {
            let sock = sock.clone();
            async move { tokio::net::UnixStream::connect(sock).await.map(hyper_util::rt::TokioIo::new) }
        }))
        .await
        .unwrap();
    v1::runtime_service_client::RuntimeServiceClient::new(channel)
}

#[test]
fn exec_requests_are_checked_as_kubelet_checks_them() {
    let e = Env::start();
    e.container("c8");
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let req = |tty, stdin, stdout, stderr| v1::ExecRequest {
            container_id: "c8".into(),
            cmd: vec!["true".into()],
            tty,
            stdin,
            stdout,
            stderr,
        };
        for (r, want) in [
            (req(true, true, true, true), "tty and stderr cannot both be true"),
            (req(false, false, false, false), "one of stdin, stdout, or stderr must be specified"),
            (v1::ExecRequest { cmd: vec![], ..req(false, false, true, false) }, "cmd is required"),
        ] {
            let err = c.exec(r).await.unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
            assert!(err.message().contains(want), "{err:?}");
        }
        let url = c.exec(req(false, false, true, false)).await.unwrap().into_inner().url;
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let err = c.port_forward(v1::PortForwardRequest { pod_sandbox_id: "c8".into(), port: vec![0] }).await;
        assert!(err.unwrap_err().message().contains("port 0 is not 1-65535"));
    });
}

#[test]
fn websocket_v4_clients_get_channels_and_a_status() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let e = Env::start();
    e.container("c9");
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let cmd = ["sh", "-c", "head -c 5; echo err >&2; exit 7"].map(String::from).to_vec();
        let req =
            v1::ExecRequest { container_id: "c9".into(), cmd, stdin: true, stdout: true, stderr: true, tty: false };
        let url = c.exec(req).await.unwrap().into_inner().url;
        let mut ws_req = url.replacen("http://", "ws://", 1).into_client_request().unwrap();
        ws_req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(url["http://".len()..].split('/').next().unwrap()).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
        assert_eq!(resp.headers()["sec-websocket-protocol"], "v4.channel.k8s.io");
        // stdin on channel 0 (v4 has no close signal: head stops at 5 bytes).
        ws.send(Message::Binary(b"\x00hello world".to_vec().into())).await.unwrap();
        let mut chans: [Vec<u8>; 4] = Default::default();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(d) = m
                && let Some((&ch, rest)) = d.split_first()
            {
                chans[usize::from(ch).min(3)].extend_from_slice(rest);
            }
        }
        assert_eq!(s(&chans[1]), "hello");
        assert_eq!(s(&chans[2]), "err\n");
        let status: serde_json::Value = serde_json::from_slice(&chans[3]).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "7", "{status}");
    });
}

#[test]
fn spdy_v3_clients_get_a_text_error_and_odd_streams_or_junk_do_not_stall() {
    use berthd::stream::spdy::{self, Frame, HeaderDecoder, HeaderEncoder};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

    let e = Env::start();
    e.container("c10");
    let session = async {
        let mut c = runtime_client(&e.d).await;
        let cmd = ["sh", "-c", "echo out; head -c 3; exit 9"].map(String::from).to_vec();
        let req = v1::ExecRequest { container_id: "c10".into(), cmd, stdout: true, stdin: true, ..Default::default() };
        let url = c.exec(req).await.unwrap().into_inner().url;
        let (host, path) = url["http://".len()..].split_once('/').unwrap();
        let mut tcp = tokio::io::BufReader::new(tokio::net::TcpStream::connect(host).await.unwrap());
        let head = format!(
            "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: v3.channel.k8s.io\r\nX-Stream-Protocol-Version: v2.channel.k8s.io\r\n\
             Content-Length: 0\r\n\r\n"
        );
        tcp.get_mut().write_all(head.as_bytes()).await.unwrap();
        let mut resp = String::new();
        loop {
            let mut line = String::new();
            tcp.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            resp.push_str(&line);
        }
        assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
        assert!(resp.to_ascii_lowercase().contains("x-stream-protocol-version: v3.channel.k8s.io"), "{resp}");
        let mut enc = HeaderEncoder::new();
        let syn = |id: u32, kind: &str| Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), kind.into())],
        };
        for f in [syn(1, "error"), syn(3, "bogus"), syn(5, "stdout"), syn(7, "stdin")] {
            tcp.get_mut().write_all(&spdy::encode(&f, &mut enc).unwrap()).await.unwrap();
        }
        // Junk on the error stream (the server only writes there) must not
        // hold up what follows: stdin.
        let junk = |id| Frame::Data { stream_id: id, flags: 0, data: vec![b'x'; 1024].into() };
        for f in std::iter::repeat_with(|| junk(1)).take(300).chain([junk(3)]) {
            tcp.get_mut().write_all(&spdy::encode(&f, &mut enc).unwrap()).await.unwrap();
        }
        let stdin = Frame::Data { stream_id: 7, flags: spdy::FLAG_FIN, data: b"abc".to_vec().into() };
        tcp.get_mut().write_all(&spdy::encode(&stdin, &mut enc).unwrap()).await.unwrap();
        let mut dec = HeaderDecoder::new();
        let (mut out, mut err, mut refused, mut fins) = (Vec::new(), Vec::new(), false, 0);
        while fins < 2 {
            match spdy::read_frame(&mut tcp, &mut dec).await.unwrap().expect("the server ended early") {
                Frame::Data { stream_id: 5, data, flags } => {
                    out.extend_from_slice(&data);
                    fins += usize::from(flags & spdy::FLAG_FIN != 0);
                }
                Frame::Data { stream_id: 1, data, flags } => {
                    err.extend_from_slice(&data);
                    fins += usize::from(flags & spdy::FLAG_FIN != 0);
                }
                Frame::RstStream { stream_id: 3, status } => refused = status == spdy::RST_REFUSED_STREAM,
                _ => {}
            }
        }
        assert!(refused, "a stream of an unknown type is refused");
        assert_eq!(s(&out), "out\nabc");
        // v2/v3 clients read a failure as text, not as a Status.
        assert_eq!(s(&err), "command terminated with non-zero exit code: exit status 9");
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await })
        .expect("the SPDY session stalled");
}

#[test]
fn websocket_v4_port_forward_has_a_channel_pair_per_port() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let e = Env::start();
    e.container("pod3");
    let open = echo_server();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::PortForwardRequest { pod_sandbox_id: "pod3".into(), port: vec![] };
        let url = c.port_forward(req).await.unwrap().into_inner().url;
        let url = format!("{}?port={open}&port={closed}", url.replacen("http://", "ws://", 1));
        let host = url["ws://".len()..].split('/').next().unwrap().to_string();
        let mut ws_req = url.into_client_request().unwrap();
        ws_req.headers_mut().insert("Sec-WebSocket-Protocol", "v4.channel.k8s.io".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
        ws.send(Message::Binary(b"\x00ping\n".to_vec().into())).await.unwrap();
        let mut chans: [Vec<Vec<u8>>; 4] = Default::default();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(d) = m
                && let Some((&ch, rest)) = d.split_first()
            {
                chans[usize::from(ch).min(3)].push(rest.to_vec());
            }
        }
        // Each channel starts with its port, little-endian.
        for (ch, port) in [(0, open), (1, open), (2, closed), (3, closed)] {
            assert_eq!(chans[ch].first().map(Vec::as_slice), Some(&port.to_le_bytes()[..]), "channel {ch}");
        }
        assert_eq!(s(&chans[0][1..].concat()), "pong: ping\n");
        assert!(chans[1].len() == 1, "no error for the open port: {:?}", chans[1]);
        let err = s(&chans[3][1..].concat());
        assert!(err.contains(&format!("error forwarding port {closed} to pod pod3")), "{err}");
    });
}

/// Starts `crictl exec` of a command that writes its PID to `pidfile` and
/// then sleeps without a byte of output; the client and the PID.
fn silent_exec(e: &Env, transport: &str, id: &str, pidfile: &Path) -> (std::process::Child, i32) {
    let script = format!("echo $$ > {}; exec sleep 1000", pidfile.display());
    let client = e
        .crictl()
        .args(["exec", "--transport", transport, id, "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    poll("the command writes its PID", || std::fs::read_to_string(pidfile).is_ok_and(|p| p.ends_with('\n')));
    let pid: i32 = std::fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    (client, pid)
}

#[test]
fn an_idle_session_is_closed_and_its_command_killed() {
    let e = Env::start_with("idle_timeout = \"2s\"");
    let dir = e.container("idle");
    for t in TRANSPORTS {
        let (mut client, pid) = silent_exec(&e, t, "idle", &dir.join(format!("pid-{t}")));
        let _guard = KillOnDrop(pid);
        let _client_guard = KillOnDrop(client.id() as i32);
        // No data either way: berthd closes the session, which kills the
        // command (as kubelet's idle timeout does), and the client ends.
        poll(&format!("{t}: the idle session's command is killed"), || !running(pid));
        poll(&format!("{t}: the client of the idle session ends"), || client.try_wait().unwrap().is_some());
    }
}

/// A raw upgrade request on the streaming server: the status line and
/// the body.
fn http_answer(url: &str, upgrade: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut c = TcpStream::connect(host).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        c,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {upgrade}\r\n\
         X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut r = BufReader::new(c);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    (status.trim_end().to_string(), s(&body))
}

#[test]
fn sessions_past_the_cap_are_refused_until_one_ends() {
    let e = Env::start_with("max_sessions = 2");
    let dir = e.container("cap");
    let (mut first, pid1) = silent_exec(&e, "spdy", "cap", &dir.join("pid-1"));
    let (_second, pid2) = silent_exec(&e, "websocket", "cap", &dir.join("pid-2"));
    let _guards = [KillOnDrop(pid1), KillOnDrop(pid2), KillOnDrop(first.id() as i32), KillOnDrop(_second.id() as i32)];
    let url = RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::ExecRequest {
            container_id: "cap".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        };
        c.exec(req).await.unwrap().into_inner().url
    });
    let (status, body) = http_answer(&url, "SPDY/3.1");
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    assert!(body.contains("too many streaming sessions (at most 2)"), "{body}");
    // The refused request did not spend its token, and a session that
    // ends gives its place back.
    first.kill().unwrap();
    first.wait().unwrap();
    poll("the first session's command is killed", || !running(pid1));
    let out = e.run(&["exec", "cap", "sh", "-c", "echo again"], None);
    assert!(out.status.success(), "{}", s(&out.stderr));
    assert_eq!(s(&out.stdout), "again\n");
}

/// A SPDY client of the tests: the upgraded connection of `url`, and the
/// header compression state of each direction.
struct SpdyClient {
    tcp: tokio::io::BufReader<tokio::net::TcpStream>,
    enc: berthd::stream::spdy::HeaderEncoder,
    dec: berthd::stream::spdy::HeaderDecoder,
    /// The receive window the server announced (SETTINGS), if it did.
    announced: Option<u32>,
}

impl SpdyClient {
    async fn connect(url: &str, protocol: &str) -> SpdyClient {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let (host, path) = url["http://".len()..].split_once('/').unwrap();
        let mut tcp = tokio::io::BufReader::new(tokio::net::TcpStream::connect(host).await.unwrap());
        let head = format!(
            "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
             X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.get_mut().write_all(head.as_bytes()).await.unwrap();
        let mut resp = String::new();
        loop {
            let mut line = String::new();
            tcp.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            resp.push_str(&line);
        }
        assert!(resp.starts_with("HTTP/1.1 101"), "{resp}");
        SpdyClient {
            tcp,
            enc: berthd::stream::spdy::HeaderEncoder::new(),
            dec: berthd::stream::spdy::HeaderDecoder::new(),
            announced: None,
        }
    }

    async fn send(&mut self, f: berthd::stream::spdy::Frame) {
        use tokio::io::AsyncWriteExt;
        let bytes = berthd::stream::spdy::encode(&f, &mut self.enc).unwrap();
        self.tcp.get_mut().write_all(&bytes).await.unwrap();
    }

    async fn syn(&mut self, id: u32, headers: &[(&str, &str)]) {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.send(berthd::stream::spdy::Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers,
        })
        .await;
    }

    async fn data(&mut self, id: u32, data: &[u8]) {
        self.send(berthd::stream::spdy::Frame::Data { stream_id: id, flags: 0, data: data.to_vec().into() }).await;
    }

    async fn frame(&mut self) -> berthd::stream::spdy::Frame {
        use berthd::stream::spdy::{self, Frame};
        let f = spdy::read_frame(&mut self.tcp, &mut self.dec).await.unwrap().expect("the server ended early");
        if let Frame::Settings { entries, .. } = &f {
            let window = entries.iter().find(|e| e.1 == SETTINGS_INITIAL_WINDOW_SIZE);
            self.announced = window.map(|e| e.2).or(self.announced);
        }
        f
    }
}

#[test]
fn spdy_streams_past_the_cap_are_refused() {
    use berthd::stream::spdy::{Frame, RST_REFUSED_STREAM};
    let e = Env::start_with("max_streams_per_session = 5");
    e.container("pod5");
    let session = async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::PortForwardRequest { pod_sandbox_id: "pod5".into(), port: vec![] };
        let url = c.port_forward(req).await.unwrap().into_inner().url;
        let mut spdy = SpdyClient::connect(&url, "portforward.k8s.io").await;
        // Seven error streams waiting for their data stream: five are open
        // at once at most.
        for i in 0..7u32 {
            let rid = i.to_string();
            spdy.syn(2 * i + 1, &[("streamtype", "error"), ("port", "80"), ("requestid", &rid)]).await;
        }
        let (mut replied, mut refused) = (Vec::new(), Vec::new());
        while replied.len() + refused.len() < 7 {
            match spdy.frame().await {
                Frame::SynReply { stream_id, .. } => replied.push(stream_id),
                Frame::RstStream { stream_id, status } if status == RST_REFUSED_STREAM => refused.push(stream_id),
                _ => {}
            }
        }
        assert_eq!(replied, [1, 3, 5, 7, 9]);
        assert_eq!(refused, [11, 13]);
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await }).expect("the session stalled");
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const FIFTY_MIB: usize = 50 << 20;
/// The SETTINGS ID of the initial window size (SPDY/3).
const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
const RSS_BOUND_KIB: u64 = 64 << 10;

#[test]
fn spdy_output_keeps_to_a_slow_clients_window_and_berthd_stays_bounded() {
    use berthd::stream::spdy::{self, Frame};
    let e = Env::start();
    e.container("big");
    let session = async {
        let mut c = runtime_client(&e.d).await;
        let cmd = ["head", "-c", &FIFTY_MIB.to_string(), "/dev/zero"].map(String::from).to_vec();
        let req = v1::ExecRequest { container_id: "big".into(), cmd, stdout: true, ..Default::default() };
        let url = c.exec(req).await.unwrap().into_inner().url;
        let rss_before = vm_rss_kib(e.d.pid());
        let mut client = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
        // This client keeps windows: 64 KiB per stream, as it says.
        let window = 64 * 1024;
        let entries = vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, window)];
        client.send(Frame::Settings { flags: 0, entries }).await;
        client.syn(1, &[("streamtype", "error")]).await;
        client.syn(3, &[("streamtype", "stdout")]).await;
        // The stream's and the session's windows start alike (64 KiB).
        let (mut got, mut granted, mut rss_max, mut status) = (0usize, window as usize, 0, None);
        while status.is_none() {
            match client.frame().await {
                Frame::Data { stream_id: 3, data, .. } => {
                    got += data.len();
                    assert!(got <= granted, "berthd sent {got} bytes on a stream it had {granted} of window for");
                    // A slow reader: opens the window again only once it
                    // is used up, after a pause.
                    if got == granted {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        client.send(Frame::WindowUpdate { stream_id: 3, delta: window }).await;
                        client.send(Frame::WindowUpdate { stream_id: 0, delta: window }).await;
                        granted += window as usize;
                        rss_max = rss_max.max(vm_rss_kib(e.d.pid()));
                    }
                }
                Frame::Data { stream_id: 1, data, flags } if flags & spdy::FLAG_FIN != 0 || !data.is_empty() => {
                    status = Some(s(&data));
                }
                _ => {}
            }
        }
        assert_eq!(got, FIFTY_MIB);
        assert!(status.unwrap().contains("Success"));
        assert!(
            rss_max < rss_before + RSS_BOUND_KIB,
            "berthd grew from {rss_before} KiB to {rss_max} KiB while a slow client read 50 MiB"
        );
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(300), session).await }).expect("the session stalled");
}

#[test]
fn websocket_output_to_a_slow_reader_keeps_berthd_bounded() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let e = Env::start();
    e.container("bigws");
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let cmd = ["head", "-c", &FIFTY_MIB.to_string(), "/dev/zero"].map(String::from).to_vec();
        let req = v1::ExecRequest { container_id: "bigws".into(), cmd, stdout: true, ..Default::default() };
        let url = c.exec(req).await.unwrap().into_inner().url;
        let rss_before = vm_rss_kib(e.d.pid());
        let mut ws_req = url.replacen("http://", "ws://", 1).into_client_request().unwrap();
        ws_req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(url["http://".len()..].split('/').next().unwrap()).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
        let (mut got, mut rss_max, mut n) = (0usize, 0, 0u64);
        let mut status = Vec::new();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(d) = m {
                match d.split_first() {
                    Some((1, rest)) => got += rest.len(),
                    Some((3, rest)) => status.extend_from_slice(rest),
                    _ => {}
                }
                n += 1;
                if n.is_multiple_of(16) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    rss_max = rss_max.max(vm_rss_kib(e.d.pid()));
                }
            }
        }
        assert_eq!(got, FIFTY_MIB);
        assert!(s(&status).contains("Success"), "{}", s(&status));
        assert!(
            rss_max < rss_before + RSS_BOUND_KIB,
            "berthd grew from {rss_before} KiB to {rss_max} KiB while a slow client read 50 MiB"
        );
    });
}

/// Reads frames until stream `id`'s data so far contains `want`.
async fn read_until(client: &mut SpdyClient, id: u32, seen: &mut Vec<u8>, want: &str) {
    use berthd::stream::spdy::Frame;
    while !s(seen).contains(want) {
        if let Frame::Data { stream_id, data, .. } = client.frame().await
            && stream_id == id
        {
            seen.extend_from_slice(&data);
        }
    }
}

/// An exec with a tty over SPDY v4 (error 1, stdin 3, stdout 5, resize
/// 7) of `script`, after a first resize to 80x24.
async fn tty_exec(e: &Env, id: &str, script: &str) -> SpdyClient {
    let mut c = runtime_client(&e.d).await;
    let cmd = ["sh", "-c", script].map(String::from).to_vec();
    let req = v1::ExecRequest { container_id: id.into(), cmd, tty: true, stdin: true, stdout: true, stderr: false };
    let url = c.exec(req).await.unwrap().into_inner().url;
    let mut client = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    for (sid, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
        client.syn(sid, &[("streamtype", kind)]).await;
    }
    client.data(7, br#"{"Width":80,"Height":24}"#).await;
    client
}

#[test]
fn a_resize_after_the_first_reaches_the_pty() {
    let e = Env::start();
    e.container("rs");
    let session = async {
        // The trap first: a resize can come as soon as the size is out.
        let script = "trap 'stty size; exit 0' WINCH; stty size; while :; do sleep 0.1; done";
        let mut client = tty_exec(&e, "rs", script).await;
        let mut out = Vec::new();
        read_until(&mut client, 5, &mut out, "24 80").await;
        client.data(7, br#"{"Width":100,"Height":40}"#).await;
        read_until(&mut client, 5, &mut out, "40 100").await;
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await })
        .expect("the second resize did not reach the pty");
}

#[test]
fn stdin_the_command_does_not_read_does_not_hold_up_its_session() {
    let e = Env::start();
    e.container("slowin");
    let session = async {
        // The command never reads stdin: what the client sends piles up.
        let script = "stty raw -echo; trap 'stty size; exit 0' WINCH; stty size; while :; do sleep 0.1; done";
        let mut client = tty_exec(&e, "slowin", script).await;
        let mut out = Vec::new();
        read_until(&mut client, 5, &mut out, "24 80").await;
        // 120 KiB, within the window berthd announces, in small frames.
        let sent = 120 * 1024;
        for _ in 0..sent / 256 {
            client.data(3, &[b'x'; 256]).await;
        }
        // The session is still read: the resize behind the stdin arrives.
        client.data(7, br#"{"Width":100,"Height":40}"#).await;
        read_until(&mut client, 5, &mut out, "40 100").await;
        let announced = client.announced.expect("berthd announces its receive window");
        assert!(announced as usize >= sent, "window {announced} < {sent}");
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await })
        .expect("stdin nobody reads held up the rest of the session");
    stops_on_sigterm(e);
}

/// berthd stops on SIGTERM (within the testkit's 30 s): nothing of a
/// session, such as a write to a pty nobody reads, holds up its exit.
fn stops_on_sigterm(mut e: Env) {
    let status = e.d.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.is_some_and(|s| s.success()), "berthd did not stop on SIGTERM: {status:?}\n{}", e.d.stderr());
}

#[test]
fn tls_makes_the_urls_https_and_serves_exec_to_a_client_that_trusts_the_cert() {
    use futures_util::StreamExt;
    use tokio_rustls::rustls;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let certs = tempfile::tempdir().unwrap();
    // crictl checks the name "localhost" (its --tls-sni default).
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let (crt, key) = (certs.path().join("stream.crt"), certs.path().join("stream.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&key, signing_key.serialize_pem()).unwrap();
    let e = Env::start_with(&format!("tls_cert_file = \"{}\"\ntls_key_file = \"{}\"", crt.display(), key.display()));
    e.container("tls");
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let cmd = ["sh", "-c", "echo over tls"].map(String::from).to_vec();
        let req = v1::ExecRequest { container_id: "tls".into(), cmd, stdout: true, ..Default::default() };
        let url = c.exec(req).await.unwrap().into_inner().url;
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = url["https://".len()..].split('/').next().unwrap().to_string();
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.unwrap();
        let mut ws_req = url.replacen("https://", "wss://", 1).into_client_request().unwrap();
        ws_req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tls).await.unwrap();
        let mut chans: [Vec<u8>; 4] = Default::default();
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Binary(d) = m
                && let Some((&ch, rest)) = d.split_first()
            {
                chans[usize::from(ch).min(3)].extend_from_slice(rest);
            }
        }
        assert_eq!(s(&chans[1]), "over tls\n");
        assert!(s(&chans[3]).contains("Success"), "{}", s(&chans[3]));
        // Plain HTTP on the TLS port gets no answer it could read.
        let url = c.exec(v1::ExecRequest {
            container_id: "tls".into(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        });
        let url = url.await.unwrap().into_inner().url.replacen("https://", "http://", 1);
        let plain = std::thread::spawn(move || {
            let rest = url.strip_prefix("http://").unwrap();
            let (host, path) = rest.split_once('/').unwrap();
            let mut c = TcpStream::connect(host).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let _ = write!(c, "POST /{path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: SPDY/3.1\r\n\r\n");
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            got
        });
        assert!(!plain.join().unwrap().starts_with(b"HTTP/1.1 101"));
    });
    // crictl trusts the CA given by --tls-ca, and refuses a server whose
    // certificate another CA signed. (It wants a client certificate too,
    // which berthd does not ask for: any will do.)
    let ca = crt.display().to_string();
    let client = ["--tls-cert", &ca, "--tls-key", key.to_str().unwrap()];
    let other = certs.path().join("other.crt");
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&other, stranger.cert.pem()).unwrap();
    for t in TRANSPORTS {
        let args = [&["exec", "--tls-ca", &ca][..], &client, &["--transport", t, "tls", "sh", "-c", "echo over tls"]];
        let out = e.run(&args.concat(), None);
        assert!(out.status.success(), "{t}: {}", s(&out.stderr));
        assert_eq!(s(&out.stdout), "over tls\n", "{t}");
        let other = other.display().to_string();
        let out =
            e.run(&[&["exec", "--tls-ca", &other][..], &client, &["--transport", t, "tls", "true"]].concat(), None);
        assert!(!out.status.success(), "{t}: a server signed by another CA was trusted");
        assert!(s(&out.stderr).contains("certificate"), "{t}: {}", s(&out.stderr));
    }
}

#[test]
fn a_tls_key_that_is_no_key_stops_berthd_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, .. } = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (crt, key) = (dir.path().join("stream.crt"), dir.path().join("stream.key"));
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let streamer = dir.path().join("c");
    std::fs::create_dir(&streamer).unwrap();
    let config = format!(
        "[stream]\ndebug_host_streamer_dir = \"{}\"\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        streamer.display(),
        crt.display(),
        key.display()
    );
    let f = Berthd::try_start(&config).err().expect("berthd starts with a key file that holds no key");
    assert!(f.stderr.contains("tls_key_file") && f.stderr.contains(&key.display().to_string()), "{}", f.stderr);
}

#[test]
fn websocket_stdin_the_command_does_not_read_does_not_hold_up_its_session() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let e = Env::start();
    e.container("wsin");
    let session = async {
        let mut c = runtime_client(&e.d).await;
        let script = "stty raw -echo; trap 'stty size; exit 0' WINCH; stty size; while :; do sleep 0.1; done";
        let cmd = ["sh", "-c", script].map(String::from).to_vec();
        let req =
            v1::ExecRequest { container_id: "wsin".into(), cmd, tty: true, stdin: true, stdout: true, stderr: false };
        let url = c.exec(req).await.unwrap().into_inner().url;
        let mut ws_req = url.replacen("http://", "ws://", 1).into_client_request().unwrap();
        ws_req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse().unwrap());
        let tcp = tokio::net::TcpStream::connect(url["http://".len()..].split('/').next().unwrap()).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
        let resize =
            |w: u16, h: u16| Message::Binary(format!("\x04{{\"Width\":{w},\"Height\":{h}}}").into_bytes().into());
        ws.send(resize(80, 24)).await.unwrap();
        let mut out = Vec::new();
        let mut read_until = async |ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, want: &str| {
            while !s(&out).contains(want) {
                match ws.next().await {
                    Some(Ok(Message::Binary(d))) if d.first() == Some(&1) => out.extend_from_slice(&d[1..]),
                    Some(Ok(_)) => {}
                    other => panic!("the session ended before {want:?}: {other:?}; got {:?}", s(&out)),
                }
            }
        };
        read_until(&mut ws, "24 80").await;
        // 120 KiB of stdin in small messages that nothing reads, then a resize.
        for _ in 0..(120 * 1024 / 256) {
            let mut m = vec![0u8];
            m.extend_from_slice(&[b'x'; 256]);
            ws.send(Message::Binary(m.into())).await.unwrap();
        }
        ws.send(resize(100, 40)).await.unwrap();
        read_until(&mut ws, "40 100").await;
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await })
        .expect("stdin nobody reads held up the rest of the WebSocket session");
    stops_on_sigterm(e);
}

#[test]
fn an_idle_port_forward_session_ends_even_when_its_target_stays_open() {
    use std::sync::mpsc;
    let e = Env::start_with("idle_timeout = \"2s\"\nmax_sessions = 1");
    e.container("podidle");
    // The target reads until EOF and then holds its connection open,
    // silent, until the test ends.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (events, seen) = mpsc::channel::<&'static str>();
    let (_hold, held) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else { return };
        let mut buf = [0u8; 64];
        while c.read(&mut buf).is_ok_and(|n| n > 0) {}
        let _ = events.send("eof");
        let _ = held.recv();
    });
    let port_s = port.to_string();
    let _client = RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::PortForwardRequest { pod_sandbox_id: "podidle".into(), port: vec![] };
        let url = c.port_forward(req).await.unwrap().into_inner().url;
        let mut client = SpdyClient::connect(&url, "portforward.k8s.io").await;
        client.syn(1, &[("streamtype", "error"), ("port", &port_s), ("requestid", "0")]).await;
        client.syn(3, &[("streamtype", "data"), ("port", &port_s), ("requestid", "0")]).await;
        // Then nothing either way, the connection held open.
        client
    });
    assert_eq!(seen.recv_timeout(Duration::from_secs(30)), Ok("eof"), "the idle session's target saw no EOF");
    // The session is over, its forwarded connection too: its place (the
    // only one) is free again.
    poll("a new session once the idle one is over", || {
        let url = RT.block_on(async {
            let mut c = runtime_client(&e.d).await;
            let req = v1::PortForwardRequest { pod_sandbox_id: "podidle".into(), port: vec![] };
            c.port_forward(req).await.unwrap().into_inner().url
        });
        // Any answer but 429 (this one offers no port-forward protocol).
        let (status, _) = http_answer(&url, "SPDY/3.1");
        status != "HTTP/1.1 429 Too Many Requests"
    });
}

/// berthd as it ships, on the engine's containers, and the `berth` CLI on
/// its root and runroot (one engine, one store) with busybox imported as
/// an image. The containers it made are removed when it is dropped.
struct EngineEnv {
    d: Berthd,
    ids: std::sync::Mutex<Vec<String>>,
}

const IMAGE: &str = "stream-busybox:1";

impl EngineEnv {
    fn start() -> EngineEnv {
        let e = EngineEnv { d: Berthd::start(""), ids: Default::default() };
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        berth_testkit::make_busybox_rootfs(&rootfs);
        let tar = tmp.path().join("rootfs.tar");
        let st = Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".").status().unwrap();
        assert!(st.success(), "tar the busybox rootfs");
        e.berth_ok(&["import", "--change", "ENV PATH=/bin", tar.to_str().unwrap(), IMAGE]);
        e
    }

    /// `berth` on berthd's root, runroot and cgroup parent.
    fn berth(&self, args: &[&str]) -> Output {
        let mut c = Command::new(workspace_bin("berth"));
        c.arg("--root").arg(self.d.dir.path().join("root")).arg("--runroot").arg(self.d.dir.path().join("run"));
        c.arg("--runtime").arg(workspace_bin("berth-runtime"));
        c.env("BERTH_SHIM", workspace_bin("berth-shim")).env("BERTH_CGROUP_PARENT", self.d.cgroup.path());
        c.args(args);
        berth_testkit::output_via_files(&mut c)
    }

    fn berth_ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(out.status.success(), "berth {args:?}: {}", s(&out.stderr));
        s(&out.stdout)
    }

    /// `berth run -d --network none [flags] IMAGE cmd...`: the container's ID.
    fn run_d(&self, flags: &[&str], cmd: &[&str]) -> String {
        let args = [&["run", "-d", "--network", "none"][..], flags, &[IMAGE], cmd].concat();
        let id = self.berth_ok(&args).trim().to_string();
        assert_eq!(id.len(), 64, "{id}");
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    fn crictl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        crictl_run(&self.d, args, stdin)
    }

    /// `State.Running` of `berth inspect`.
    fn runs(&self, id: &str) -> bool {
        let v: serde_json::Value = serde_json::from_str(&self.berth_ok(&["inspect", id])).unwrap();
        v[0]["State"]["Running"].as_bool().unwrap()
    }
}

impl Drop for EngineEnv {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = self.berth(&["rm", "-f", id]);
        }
    }
}

/// Host PIDs of the processes whose command line is `argv`.
fn pids_of(argv: &[&str]) -> Vec<i32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[test]
fn engine_exec_runs_in_the_container_and_reports_exit_code_3() {
    let e = EngineEnv::start();
    let sleep = berth_testkit::unique_sleep();
    let id = e.run_d(&[], &["sleep", &sleep]);
    for t in TRANSPORTS {
        // PID 1 of what the command sees is the container's init.
        let script = "cat /proc/1/cmdline; echo; echo err >&2; exit 3";
        let out = e.crictl(&["exec", "--transport", t, &id, "sh", "-c", script], None);
        assert_eq!(out.status.code(), Some(1), "{t}: {out:?}");
        assert_eq!(s(&out.stdout), format!("sleep\0{sleep}\0\n"), "{t}");
        let err = s(&out.stderr);
        assert!(err.starts_with("err\n"), "{t}: {err}");
        assert!(err.contains("command terminated with exit code 3"), "{t}: {err}");
        // By a unique prefix of its ID too, as containerd resolves them.
        let ok = e.crictl(&["exec", "--transport", t, &id[..12], "echo", "fine"], None);
        assert!(ok.status.success(), "{t}: {ok:?}");
        assert_eq!(s(&ok.stdout), "fine\n", "{t}");
    }
}

#[test]
fn engine_exec_passes_stdin_through_cat_until_its_end() {
    let e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    for t in TRANSPORTS {
        let out = e.crictl(&["exec", "-i", "--transport", t, &id, "cat"], Some(&input));
        assert!(out.status.success(), "{t}: {}", s(&out.stderr));
        assert!(out.stdout == input.as_bytes(), "{t}: {} bytes back of {}", out.stdout.len(), input.len());
        // The command sees the end of stdin: wc counts every line.
        let out = e.crictl(&["exec", "-i", "--transport", t, &id, "wc", "-l"], Some(&input));
        assert_eq!(s(&out.stdout).trim(), "20000", "{t}: {}", s(&out.stderr));
    }
}

#[test]
fn engine_exec_with_a_tty_starts_at_the_clients_size() {
    let e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    for t in TRANSPORTS {
        // script gives crictl a terminal (crictl -t refuses without one);
        // `stty size` is the command's first act: the size was there at
        // its start.
        let mut crictl = e.d.crictl_cmd();
        crictl.args(["exec", "-it", "--transport", t, &id, "sh", "-c", "stty size; tty; exit 5"]);
        let line = std::iter::once(crictl.get_program())
            .chain(crictl.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        let child = Command::new("script")
            .args(["-qec", &format!("stty cols 101 rows 33; {line}"), "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(60), &line);
        let text = s(&out.stdout);
        assert!(text.contains("33 101"), "{t}: the terminal size did not reach the command: {text:?}");
        assert!(text.contains("/dev/pts/"), "{t}: {text:?} {:?}", s(&out.stderr));
        assert!(text.contains("exit code 5"), "{t}: {text:?}");
    }
}

#[test]
fn engine_exec_resize_reaches_stty_in_the_container() {
    let e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    let session = async {
        let script = "trap 'stty size; exit 0' WINCH; stty size; while :; do sleep 0.1; done";
        let mut client = tty_exec_on(&e.d, &id, script).await;
        let mut out = Vec::new();
        read_until(&mut client, 5, &mut out, "24 80").await;
        client.data(7, br#"{"Width":100,"Height":40}"#).await;
        read_until(&mut client, 5, &mut out, "40 100").await;
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await })
        .expect("the resize did not reach the container's pty");
}

/// What a hand-written SPDY v4 exec client got: stdout, stderr and the
/// error stream's status.
struct Got {
    stdout: String,
    stderr: String,
    status: String,
}

/// Runs `cmd` in `id` over SPDY v4 (error 1, stdin 3, stdout 5, stderr
/// 7), sending `stdin` and then its end.
async fn spdy_exec(d: &Berthd, id: &str, cmd: &[&str], stdin: Option<&[u8]>) -> Got {
    use berthd::stream::spdy::{FLAG_FIN, Frame};
    let mut c = runtime_client(d).await;
    let cmd = cmd.iter().map(|a| a.to_string()).collect();
    let req = v1::ExecRequest {
        container_id: id.into(),
        cmd,
        stdin: stdin.is_some(),
        stdout: true,
        stderr: true,
        tty: false,
    };
    let url = c.exec(req).await.unwrap().into_inner().url;
    let mut client = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    client.syn(1, &[("streamtype", "error")]).await;
    if stdin.is_some() {
        client.syn(3, &[("streamtype", "stdin")]).await;
    }
    client.syn(5, &[("streamtype", "stdout")]).await;
    client.syn(7, &[("streamtype", "stderr")]).await;
    if let Some(input) = stdin {
        for chunk in input.chunks(16 * 1024) {
            client.data(3, chunk).await;
        }
        client.send(Frame::Data { stream_id: 3, flags: FLAG_FIN, data: Vec::new().into() }).await;
    }
    let mut streams: [Vec<u8>; 3] = Default::default();
    // Stdout and stderr end first: the status comes last, with FIN.
    loop {
        let Frame::Data { stream_id, data, flags } = client.frame().await else { continue };
        let i = match stream_id {
            1 => 0,
            5 => 1,
            7 => 2,
            _ => continue,
        };
        streams[i].extend_from_slice(&data);
        if i == 0 && flags & FLAG_FIN != 0 {
            break;
        }
    }
    let [status, stdout, stderr] = streams.map(|b| s(&b));
    Got { stdout, stderr, status }
}

#[test]
fn engine_exec_over_a_hand_written_spdy_client() {
    let e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    RT.block_on(async {
        let got = spdy_exec(&e.d, &id, &["sh", "-c", "echo out; echo err >&2; exit 3"], None).await;
        assert_eq!(got.stdout, "out\n");
        assert_eq!(got.stderr, "err\n");
        let status: serde_json::Value = serde_json::from_str(&got.status).unwrap();
        assert_eq!(status["reason"], "NonZeroExitCode", "{status}");
        assert_eq!(status["details"]["causes"][0]["message"], "3", "{status}");
        let input: Vec<u8> = (0..5000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let got = spdy_exec(&e.d, &id, &["cat"], Some(&input)).await;
        assert!(got.stdout.as_bytes() == input, "{} bytes back of {}", got.stdout.len(), input.len());
        assert!(got.status.contains("Success"), "{}", got.status);
    });
}

/// An exec with a tty over SPDY v4 (error 1, stdin 3, stdout 5, resize
/// 7) of `script` in container `id` of `d`, after a first resize to 80x24.
async fn tty_exec_on(d: &Berthd, id: &str, script: &str) -> SpdyClient {
    let mut c = runtime_client(d).await;
    let cmd = ["sh", "-c", script].map(String::from).to_vec();
    let req = v1::ExecRequest { container_id: id.into(), cmd, tty: true, stdin: true, stdout: true, stderr: false };
    let url = c.exec(req).await.unwrap().into_inner().url;
    let mut client = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
    for (sid, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
        client.syn(sid, &[("streamtype", kind)]).await;
    }
    client.data(7, br#"{"Width":80,"Height":24}"#).await;
    client
}

#[test]
fn engine_exec_of_a_client_that_leaves_is_killed_and_reaped() {
    let e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    for t in ["spdy", "websocket", "tty"] {
        let sleep = berth_testkit::unique_sleep();
        let argv = ["sleep", sleep.as_str()];
        // A raw SPDY tty session, or crictl over SPDY or WebSocket.
        let (mut tty, mut crictl) = (None, None);
        if t == "tty" {
            tty = Some(RT.block_on(tty_exec_on(&e.d, &id, &format!("exec sleep {sleep}"))));
        } else {
            let mut c = e.d.crictl_cmd();
            c.args(["exec", "--transport", t, &id, "sleep", &sleep]).stdout(Stdio::null()).stderr(Stdio::null());
            crictl = Some(c.spawn().unwrap());
        }
        poll(&format!("{t}: the command runs"), || pids_of(&argv).len() == 1);
        let pid = pids_of(&argv)[0];
        let _guard = KillOnDrop(pid);
        // The client leaves mid-command.
        drop(tty.take());
        if let Some(c) = crictl.as_mut() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
        // Gone, not even a zombie: the shim reaped it.
        poll(&format!("{t}: the command of a client that left is killed and reaped"), || {
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
    }
    // The container is none the worse.
    let ok = e.crictl(&["exec", &id, "echo", "still here"], None);
    assert_eq!(s(&ok.stdout), "still here\n", "{}", s(&ok.stderr));
}

#[test]
fn engine_attach_streams_output_and_takes_input() {
    let e = EngineEnv::start();
    let script = "echo ready; while read l; do echo got:$l; done; echo bye";
    let id = e.run_d(&["-i"], &["sh", "-c", script]);
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::AttachRequest { container_id: id.clone(), stdin: true, stdout: true, stderr: true, tty: false };
        let url = c.attach(req).await.unwrap().into_inner().url;
        let mut client = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
        for (sid, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
            client.syn(sid, &[("streamtype", kind)]).await;
        }
        client.data(3, b"hello\n").await;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), read_until(&mut client, 5, &mut out, "got:hello"))
            .await
            .unwrap_or_else(|_| panic!("no echo of the input: {:?}", s(&out)));
        // Leaving detaches; the container runs on.
        drop(client);
    });
    assert!(e.runs(&id), "attach and detach stopped the container");
    // crictl attach from a later point: its input reaches the container.
    let mut child =
        e.d.crictl_cmd()
            .args(["attach", "-i", &id])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    child.stdin.take().unwrap().write_all(b"again\n").unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let _crictl = Forward(child);
    let mut line = String::new();
    while line != "got:again\n" {
        line.clear();
        assert!(lines.read_line(&mut line).unwrap() > 0, "crictl attach ended without the echo");
    }
    // Its stdin is closed now (dropped above) and the attach goes on, as
    // containerd's does: the container (no stdin_once) keeps its stdin.
    drop(_crictl);
    assert!(e.runs(&id), "the container runs on after its attach clients left");
    let out = e.crictl(&["exec", &id, "echo", "alive"], None);
    assert_eq!(s(&out.stdout), "alive\n", "{}", s(&out.stderr));
}

#[test]
fn engine_attach_with_stdin_once_closes_the_containers_stdin() {
    let e = EngineEnv::start();
    let script = "while read l; do echo got:$l; done; echo bye";
    let label = format!("{}=true", berthd::stream::engine::STDIN_ONCE_LABEL);
    for t in TRANSPORTS {
        let id = e.run_d(&["-i", "--label", &label], &["sh", "-c", script]);
        let out = e.crictl(&["attach", "-i", "--transport", t, &id], Some("one\ntwo\n"));
        let text = s(&out.stdout);
        assert!(text.contains("got:one\ngot:two\n"), "{t}: {out:?}");
        // The end of the client's stdin was the container's: read saw EOF.
        assert!(text.contains("bye"), "{t}: {out:?}");
        assert!(out.status.success(), "{t}: {out:?}");
    }
}

/// A port free on the host's loopback (bound, then closed).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// GET / on the forwarded `local` port: the whole answer.
fn http_get(local: u16) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", local)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
    let mut got = Vec::new();
    match c.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("read from the forwarded port: {e}"),
    }
    s(&got)
}

/// A container (own network namespace, lo only) serving `page` with
/// busybox httpd on `port`; its ID, once the server answers.
fn httpd_container(e: &EngineEnv, port: u16, page: &str) -> String {
    let script = format!("mkdir -p /www; echo {page} > /www/index.html; exec httpd -f -p {port} -h /www");
    let id = e.run_d(&[], &["sh", "-c", &script]);
    poll("httpd listens in the container", || {
        e.berth(&["exec", &id, "sh", "-c", &format!("wget -q -O - http://127.0.0.1:{port}/")])
            .stdout
            .starts_with(page.as_bytes())
    });
    id
}

#[test]
fn engine_port_forward_reaches_httpd_in_the_pods_network_namespace() {
    let e = EngineEnv::start();
    // Nothing listens on the host's port: only the container's netns has it.
    let port = free_port();
    let id = httpd_container(&e, port, "hello-from-the-pod");
    for t in TRANSPORTS {
        let mut child =
            e.d.crictl_cmd()
                .args(["port-forward", "--transport", t, &id, &format!(":{port}")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let _fwd = Forward(child);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let local: u16 = line
            .strip_prefix("Forwarding from 127.0.0.1:")
            .and_then(|l| l.split_whitespace().next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("crictl port-forward printed {line:?}"));
        let page = http_get(local);
        assert!(page.starts_with("HTTP/1.") && page.contains("hello-from-the-pod"), "{t}: {page:?}");
        // 20 connections at once, each its own stream pair.
        let all: Vec<_> = (0..20).map(|_| std::thread::spawn(move || http_get(local))).collect();
        for (i, h) in all.into_iter().enumerate() {
            let page = h.join().unwrap();
            assert!(page.contains("hello-from-the-pod"), "{t}: connection {i}: {page:?}");
        }
    }
}

#[test]
fn engine_port_forward_over_a_hand_written_client_and_to_a_closed_port() {
    use berthd::stream::spdy::Frame;
    let e = EngineEnv::start();
    let port = free_port();
    let id = httpd_container(&e, port, "hand-written");
    let closed = free_port();
    RT.block_on(async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::PortForwardRequest { pod_sandbox_id: id.clone(), port: vec![] };
        let url = c.port_forward(req).await.unwrap().into_inner().url;
        let mut client = SpdyClient::connect(&url, "portforward.k8s.io").await;
        let (p, q) = (port.to_string(), closed.to_string());
        client.syn(1, &[("streamtype", "error"), ("port", &p), ("requestid", "0")]).await;
        client.syn(3, &[("streamtype", "data"), ("port", &p), ("requestid", "0")]).await;
        client.syn(5, &[("streamtype", "error"), ("port", &q), ("requestid", "1")]).await;
        client.syn(7, &[("streamtype", "data"), ("port", &q), ("requestid", "1")]).await;
        client.data(3, b"GET / HTTP/1.0\r\n\r\n").await;
        let (mut page, mut err) = (Vec::new(), Vec::new());
        let session = async {
            while !(s(&page).contains("hand-written") && s(&err).contains("refused")) {
                match client.frame().await {
                    Frame::Data { stream_id: 3, data, .. } => page.extend_from_slice(&data),
                    Frame::Data { stream_id: 5, data, .. } => err.extend_from_slice(&data),
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), session)
            .await
            .unwrap_or_else(|_| panic!("page {:?}, error {:?}", s(&page), s(&err)));
        let err = s(&err);
        assert!(
            err.contains(&format!("failed to connect to localhost:{closed} inside namespace")),
            "the error names the port and the namespace: {err}"
        );
    });
}

#[test]
fn engine_unknown_or_stopped_containers_are_refused_with_their_reason() {
    let e = EngineEnv::start();
    let live = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    // A command the container does not have: the runtime's words reach
    // the client.
    let out = e.crictl(&["exec", &live, "no-such-command"], None);
    assert!(!out.status.success());
    assert!(s(&out.stderr).contains("no-such-command"), "{}", s(&out.stderr));
    let id = e.run_d(&[], &["true"]);
    poll("the container ends", || !e.runs(&id));
    let out = e.crictl(&["exec", &id, "true"], None);
    assert!(!out.status.success());
    assert!(s(&out.stderr).contains("is not running"), "{}", s(&out.stderr));
    // An ID nothing has, and a prefix of none, are not found.
    for bad in ["0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "fffffffffff", "no-such-name"] {
        let out = e.crictl(&["exec", bad, "true"], None);
        assert!(
            s(&out.stderr).contains(&format!("NotFound desc = container \\\"{bad}\\\" not found")),
            "{}",
            s(&out.stderr)
        );
        let out = e.crictl(&["port-forward", bad, ":80"], None);
        assert!(s(&out.stderr).contains(&format!("pod sandbox \\\"{bad}\\\" not found")), "{}", s(&out.stderr));
    }
}

#[test]
fn engine_berthd_stops_on_sigterm_with_an_exec_running_and_kills_it() {
    let mut e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    let sleep = berth_testkit::unique_sleep();
    let argv = ["sleep", sleep.as_str()];
    let client = RT.block_on(tty_exec_on(&e.d, &id, &format!("exec sleep {sleep}")));
    poll("the exec'd command runs", || pids_of(&argv).len() == 1);
    let pid = pids_of(&argv)[0];
    let _guard = KillOnDrop(pid);
    let status = e.d.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert!(status.is_some_and(|s| s.success()), "berthd did not stop on SIGTERM: {status:?}\n{}", e.d.stderr());
    // Its session is gone with it, and so is what the session ran.
    poll("the exec'd command of a stopped berthd is killed and reaped", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    drop(client);
    assert!(e.runs(&id), "the container runs on without berthd");
}

/// Not a check: prints the round trip of an exec of `true` through the
/// stream (the Exec RPC, the upgrade, the streams, the exit status), as a
/// crictl-like SPDY client sees it; the median of 50. Run with
/// `cargo test -p berthd --test stream engine_exec_latency -- --ignored --nocapture`.
#[test]
#[ignore]
fn engine_exec_latency() {
    let e = EngineEnv::start();
    let id = e.run_d(&[], &["sleep", &berth_testkit::unique_sleep()]);
    let mut times: Vec<Duration> = RT.block_on(async {
        let mut all = Vec::new();
        for _ in 0..51 {
            let start = std::time::Instant::now();
            let got = spdy_exec(&e.d, &id, &["true"], None).await;
            all.push(start.elapsed());
            assert!(got.status.contains("Success"), "{}", got.status);
        }
        // The first warms the caches up.
        all.split_off(1)
    });
    times.sort();
    println!(
        "exec of true through the stream (SPDY v4), 50 runs: median {:?}, min {:?}, p90 {:?}",
        times[25], times[0], times[45]
    );
}

#[test]
fn engine_attach_to_a_tty_container_resizes_its_terminal() {
    let e = EngineEnv::start();
    let script = "trap 'stty size' WINCH; echo ready; while :; do sleep 0.1; done";
    let id = e.run_d(&["-i", "-t"], &["sh", "-c", script]);
    poll("the container's shell set its trap", || s(&e.berth(&["logs", &id]).stdout).contains("ready"));
    let session = async {
        let mut c = runtime_client(&e.d).await;
        let req = v1::AttachRequest { container_id: id.clone(), stdin: true, stdout: true, stderr: false, tty: true };
        let url = c.attach(req).await.unwrap().into_inner().url;
        let mut client = SpdyClient::connect(&url, "v4.channel.k8s.io").await;
        for (sid, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")] {
            client.syn(sid, &[("streamtype", kind)]).await;
        }
        // The shim's resize frame reaches the container's terminal: the
        // shell's WINCH trap prints the new size.
        client.data(7, br#"{"Width":123,"Height":45}"#).await;
        let mut out = Vec::new();
        read_until(&mut client, 5, &mut out, "45 123").await;
    };
    RT.block_on(async { tokio::time::timeout(Duration::from_secs(60), session).await })
        .expect("the attach client's size did not reach the container's terminal");
}
