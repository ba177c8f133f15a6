//! Pull/push progress: bars on a terminal (indicatif), plain lines
//! otherwise (logs, CI, pipes), in docker's words.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use berth_image::progress::{NoProgress, Progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn reporter(quiet: bool) -> Arc<dyn Progress> {
    if quiet {
        Arc::new(NoProgress)
    } else if std::io::stderr().is_terminal() {
        Arc::new(Bars { mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::default() })
    } else {
        Arc::new(Lines { last: Mutex::default() })
    }
}

struct Bars {
    mp: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn bar(&self, id: &str, total: u64) -> ProgressBar {
        let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.entry(id.to_string())
            .or_insert_with(|| {
                let b = self.mp.add(ProgressBar::new(total));
                let style = ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
                b.set_style(style);
                b.set_prefix(id.to_string());
                b
            })
            .clone()
    }
}

impl Progress for Bars {
    fn start(&self, id: &str, total: u64) {
        self.bar(id, total).set_length(total);
    }
    fn advance(&self, id: &str, n: u64) {
        self.bar(id, 0).inc(n);
    }
    fn status(&self, id: &str, status: &str) {
        self.bar(id, 0).set_message(status.to_string());
    }
    fn finish(&self, id: &str, status: &str) {
        let b = self.bar(id, 0);
        b.set_style(ProgressStyle::with_template("{prefix}: {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        b.finish_with_message(status.to_string());
    }
}

struct Lines {
    last: Mutex<HashMap<String, String>>,
}

impl Lines {
    fn say(&self, id: &str, status: &str) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.get(id).map(String::as_str) != Some(status) {
            last.insert(id.to_string(), status.to_string());
            eprintln!("{id}: {status}");
        }
    }
}

impl Progress for Lines {
    fn status(&self, id: &str, status: &str) {
        self.say(id, status);
    }
    fn finish(&self, id: &str, status: &str) {
        self.say(id, status);
    }
}
