//! A stage's state between instructions: the image config being built
//! (as the base had it, plus every change), its layers, the cache key of
//! the last step, and the helpers that write config fields as docker does.

use std::collections::BTreeMap;

use berth_image::Digest;
use berth_image::store::meta::LayerRecord;
use serde_json::{Map, Value, json};

use crate::ast::{Command, Healthcheck};

/// The state of a stage after an instruction.
#[derive(Clone, Debug)]
pub(crate) struct State {
    /// The whole image config (as the base had it, plus our changes).
    pub(crate) config: Value,
    pub(crate) layers: Vec<LayerRecord>,
    /// The cache key of the last step.
    pub(crate) key: Digest,
    /// ARGs declared in the stage, with their values.
    pub(crate) args: BTreeMap<String, String>,
    /// CMD was set in this stage (ENTRYPOINT then keeps it).
    pub(crate) cmd_set: bool,
}

impl State {
    pub(crate) fn cfg(&mut self) -> &mut Map<String, Value> {
        if !self.config.get("config").is_some_and(Value::is_object) {
            self.config["config"] = json!({});
        }
        self.config["config"].as_object_mut().unwrap_or_else(|| unreachable!("just made an object"))
    }

    pub(crate) fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    }

    pub(crate) fn env_get(&self, name: &str) -> Option<String> {
        self.env().iter().find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    pub(crate) fn set_env(&mut self, k: &str, v: &str) {
        let mut env = self.env();
        env.retain(|kv| kv.split_once('=').map_or(kv.as_str(), |(n, _)| n) != k);
        env.push(format!("{k}={v}"));
        self.cfg().insert("Env".into(), json!(env));
    }

    pub(crate) fn str_field(&self, name: &str) -> String {
        self.config["config"][name].as_str().unwrap_or_default().to_string()
    }

    pub(crate) fn shell(&self) -> Vec<String> {
        match self.config["config"]["Shell"].as_array() {
            Some(a) if !a.is_empty() => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            _ => vec!["/bin/sh".into(), "-c".into()],
        }
    }

    pub(crate) fn last_created(&self) -> Value {
        self.config["history"].as_array().and_then(|h| h.last()).map(|h| h["created"].clone()).unwrap_or(Value::Null)
    }

    pub(crate) fn push_history(&mut self, entry: Value) {
        if !self.config["history"].is_array() {
            self.config["history"] = json!([]);
        }
        if let Some(h) = self.config["history"].as_array_mut() {
            h.push(entry);
        }
    }
}

pub(crate) fn set_label(state: &mut State, k: &str, v: &str) {
    let mut labels = state.config["config"]["Labels"].as_object().cloned().unwrap_or_default();
    labels.insert(k.to_string(), json!(v));
    state.cfg().insert("Labels".into(), Value::Object(labels));
}

/// RUN/CMD/ENTRYPOINT's argv: the exec form as is, the shell form through
/// the stage's SHELL.
pub(crate) fn command_argv(c: &Command, shell: &[String]) -> Vec<String> {
    match c {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut a = shell.to_vec();
            a.push(s.clone());
            a
        }
    }
}

pub(crate) fn healthcheck(h: &Healthcheck) -> Value {
    match h {
        Healthcheck::None => json!({"Test": ["NONE"]}),
        Healthcheck::Check { command, interval, timeout, start_period, start_interval, retries } => {
            let test: Vec<String> = match command {
                Command::Exec(v) => std::iter::once("CMD".to_string()).chain(v.iter().cloned()).collect(),
                Command::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            };
            let mut v = json!({"Test": test});
            let ns = |d: &Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
            for (k, d) in [
                ("Interval", interval),
                ("Timeout", timeout),
                ("StartPeriod", start_period),
                ("StartInterval", start_interval),
            ] {
                if let Some(n) = ns(d) {
                    v[k] = json!(n);
                }
            }
            if let Some(r) = retries {
                v["Retries"] = json!(r);
            }
            v
        }
    }
}

pub(crate) fn rfc3339(epoch: i64) -> String {
    chrono::DateTime::from_timestamp(epoch, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}
