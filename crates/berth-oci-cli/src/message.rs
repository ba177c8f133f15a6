//! The runtime's own error message, from the log lines runc (logrus)
//! writes: `{"level":"error","msg":"...","time":"..."}` with
//! `--log-format json`, `time="..." level=error msg="..."` as text.
//! berth-runtime adds an `errno` field to the line of a failed exec of the
//! container's program (`{"errno":2,...}`, `... errno=2`); runc and crun
//! never write one.

/// A runtime's last logged error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub message: String,
    /// The errno of a failed exec, when the runtime logged one.
    pub errno: Option<i32>,
}

/// The last error in a JSON log.
pub fn last_json_error(text: &str) -> Option<String> {
    last_json_failure(text).map(|l| l.message)
}

/// The last error in a JSON log, with its errno field.
pub fn last_json_failure(text: &str) -> Option<Logged> {
    #[derive(serde::Deserialize)]
    struct Line {
        level: String,
        msg: String,
        errno: Option<i32>,
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level == "error" || l.level == "fatal")
        .map(|l| Logged { message: l.msg, errno: l.errno })
        .next_back()
}

/// The last error in a text log (or stderr): the `msg` of the last
/// `level=error` line.
pub fn last_text_error(text: &str) -> Option<String> {
    last_text_failure(text).map(|l| l.message)
}

/// The last error in a text log, with an `errno=N` field after its msg.
pub fn last_text_failure(text: &str) -> Option<Logged> {
    text.lines()
        .filter(|l| l.contains("level=error") || l.contains("level=fatal"))
        .filter_map(|l| {
            let (message, rest) = unquote(l.split_once(" msg=")?.1)?;
            let errno = rest.split_whitespace().find_map(|f| f.strip_prefix("errno=")?.parse().ok());
            Some(Logged { message, errno })
        })
        .next_back()
}

/// A Go-quoted string at the start of `s` (logrus quotes msg with %q), and
/// what follows it.
fn unquote(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut chars = body.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some((out, chars.as_str())),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'x' => {
                    let hex: String = chars.by_ref().take(2).collect();
                    out.push(char::from(u8::from_str_radix(&hex, 16).ok()?));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_error_of_a_json_log_is_the_message() {
        let log = "{\"level\":\"warning\",\"msg\":\"w\",\"time\":\"t\"}\n\
                   {\"level\":\"error\",\"msg\":\"first\",\"time\":\"t\"}\n\
                   not json\n\
                   {\"level\":\"error\",\"msg\":\"exec: \\\"nosuch\\\": not found\",\"time\":\"t\"}\n";
        assert_eq!(last_json_error(log).as_deref(), Some("exec: \"nosuch\": not found"));
        assert_eq!(last_json_error("{\"level\":\"info\",\"msg\":\"x\"}"), None);
    }

    #[test]
    fn text_log_messages_are_unquoted_as_go_quotes_them() {
        let log = "time=\"2026-11-23T19:45:49Z\" level=warning msg=\"w\"\n\
                   time=\"2026-11-23T19:45:49Z\" level=error msg=\"container \\\"x\\\" does not exist\\n\\x01\"\n";
        assert_eq!(last_text_error(log).as_deref(), Some("container \"x\" does not exist\n\u{1}"));
        assert_eq!(last_text_error("berth-runtime: plain words"), None);
    }

    #[test]
    fn an_errno_field_comes_with_the_message() {
        let log = "{\"level\":\"error\",\"msg\":\"first\",\"errno\":13,\"time\":\"t\"}\n\
                   {\"errno\":2,\"level\":\"error\",\"msg\":\"gone\",\"time\":\"t\"}\n";
        assert_eq!(last_json_failure(log), Some(Logged { message: "gone".into(), errno: Some(2) }));
        let runc = "{\"level\":\"error\",\"msg\":\"gone\",\"time\":\"t\"}\n";
        assert_eq!(last_json_failure(runc), Some(Logged { message: "gone".into(), errno: None }));
        let text = "time=\"t\" level=error msg=\"a \\\"b\\\" errno=9\" errno=2\n";
        assert_eq!(last_text_failure(text), Some(Logged { message: "a \"b\" errno=9".into(), errno: Some(2) }));
        let text = "time=\"t\" level=error msg=\"a errno=9\"\n";
        assert_eq!(last_text_failure(text), Some(Logged { message: "a errno=9".into(), errno: None }));
    }
}
