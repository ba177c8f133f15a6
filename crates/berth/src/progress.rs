//! Pull/push progress: the engine's [`ImageEvent`]s as docker shows them,
//! bars on a terminal (indicatif), plain lines otherwise (logs, CI,
//! pipes).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use berth_engine::images::{ImageEvent, LayerProgress, OnEvent, Pulled, familiar, no_events};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Where a pull's or push's events go: nowhere when `quiet`.
pub fn reporter(quiet: bool) -> OnEvent {
    if quiet {
        return no_events();
    }
    let layers: Box<dyn Layers> = if std::io::stderr().is_terminal() {
        Box::new(Bars { mp: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::default() })
    } else {
        Box::new(Lines { last: Mutex::default() })
    };
    Arc::new(move |e| show(layers.as_ref(), e))
}

fn show(layers: &dyn Layers, e: ImageEvent) {
    match e {
        ImageEvent::Missing { image } => eprintln!("Unable to find image '{image}' locally"),
        ImageEvent::Pulling { what, repository } => eprintln!("{what}: Pulling from {repository}"),
        ImageEvent::Pushing { repository } => eprintln!("The push refers to repository [{repository}]"),
        ImageEvent::Layer { id, progress } => layers.layer(&id, progress),
        ImageEvent::Pulled(p) => pulled(&p),
    }
}

fn pulled(p: &Pulled) {
    eprintln!("Digest: {}", p.digest);
    let name = familiar(&p.reference.to_string());
    if p.up_to_date {
        eprintln!("Status: Image is up to date for {name}");
    } else {
        eprintln!("Status: Downloaded newer image for {name}");
    }
}

/// How one layer's progress is drawn.
trait Layers: Send + Sync {
    fn layer(&self, id: &str, p: LayerProgress);
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

impl Layers for Bars {
    fn layer(&self, id: &str, p: LayerProgress) {
        match p {
            LayerProgress::Start { total } => self.bar(id, total).set_length(total),
            LayerProgress::Advance { bytes } => self.bar(id, 0).inc(bytes),
            LayerProgress::Status(s) => self.bar(id, 0).set_message(s),
            LayerProgress::Finish(s) => {
                let b = self.bar(id, 0);
                b.set_style(
                    ProgressStyle::with_template("{prefix}: {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.finish_with_message(s);
            }
        }
    }
}

/// One line per status change, as docker prints without a terminal.
struct Lines {
    last: Mutex<HashMap<String, String>>,
}

impl Layers for Lines {
    fn layer(&self, id: &str, p: LayerProgress) {
        let (LayerProgress::Status(status) | LayerProgress::Finish(status)) = p else { return };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.get(id) != Some(&status) {
            eprintln!("{id}: {status}");
            last.insert(id.to_string(), status);
        }
    }
}
