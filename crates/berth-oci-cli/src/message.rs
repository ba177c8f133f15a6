//! The runtime's own error message, from the log lines runc (logrus)
//! writes: `{"level":"error","msg":"...","time":"..."}` with
//! `--log-format json`, `time="..." level=error msg="..."` as text.

/// The last error in a JSON log.
pub fn last_json_error(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Line {
        level: String,
        msg: String,
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| l.level == "error" || l.level == "fatal")
        .map(|l| l.msg)
        .next_back()
}

/// The last error in a text log (or stderr): the `msg` of the last
/// `level=error` line.
pub fn last_text_error(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.contains("level=error") || l.contains("level=fatal"))
        .filter_map(|l| unquote(l.split_once(" msg=")?.1))
        .next_back()
}

/// A Go-quoted string at the start of `s` (logrus quotes msg with %q).
fn unquote(s: &str) -> Option<String> {
    let mut chars = s.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
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
}
