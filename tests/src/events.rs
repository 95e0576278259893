//! Watching containerd's event stream through `ctr events`.
//!
//! ctr 1.6 prints one event per line as
//! `TIMESTAMP NAMESPACE TOPIC PAYLOAD`, where TIMESTAMP is Go's
//! `time.Time` text (`2024-01-02 03:04:05.678 +0000 UTC`, spaces included)
//! and PAYLOAD is the event message as Go's `encoding/json` renders it: the
//! protobuf field names (`container_id`, `exit_status`, ...), with zero
//! values left out (`omitempty`), so an `exit_status` of 0 is simply absent.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::containerd::PrivateContainerd;
use crate::wait_until;

/// One line of `ctr events`.
#[derive(Debug, Clone)]
pub struct Event {
    pub namespace: String,
    /// `/tasks/create`, `/containers/delete`, ...
    pub topic: String,
    /// The event message; `Null` when ctr printed none.
    pub payload: serde_json::Value,
    /// The line as ctr printed it, for messages.
    pub line: String,
}

impl Event {
    /// Parses one line of `ctr events`; `None` for anything else.
    pub fn parse(line: &str) -> Option<Event> {
        // The topic is the first token starting with '/' (the timestamp has
        // none); the namespace is the token before it.
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let i = tokens.iter().position(|t| t.starts_with('/'))?;
        let namespace = tokens.get(i.checked_sub(1)?)?.to_string();
        let topic = tokens[i].to_string();
        let at = line.find(&format!(" {topic}"))? + topic.len() + 1;
        let rest = line[at..].trim();
        let payload = if rest.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(rest).ok()?
        };
        Some(Event {
            namespace,
            topic,
            payload,
            line: line.to_string(),
        })
    }

    /// The payload's `container_id`, if any.
    pub fn container_id(&self) -> Option<&str> {
        self.payload.get("container_id")?.as_str()
    }

    /// A numeric payload field, 0 when absent (ctr leaves zero values out).
    pub fn number(&self, field: &str) -> u64 {
        self.payload
            .get(field)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    }
}

static WATCHERS: AtomicUsize = AtomicUsize::new(0);

/// A `ctr events` running in the background, its output going to a file in
/// the instance's directory. Killed when dropped.
pub struct EventWatcher {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

/// The `/tasks/*` events of container `id`, in order.
pub fn task_events<'a>(events: &'a [Event], id: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.topic.starts_with("/tasks/") && e.container_id() == Some(id))
        .collect()
}

impl EventWatcher {
    /// Starts `ctr events` and returns once it demonstrably receives events:
    /// it labels the instance's namespace until the matching
    /// `/namespaces/update` shows up, so nothing published afterwards can be
    /// missed. Panics if that does not happen within 20 s.
    pub(crate) fn start(ctd: &PrivateContainerd) -> EventWatcher {
        let n = WATCHERS.fetch_add(1, Ordering::SeqCst);
        let out = ctd.dir().join(format!("events-{n}.out"));
        let err = ctd.dir().join(format!("events-{n}.err"));
        let child = ctd
            .ctr_command(&["events"])
            .stdin(Stdio::null())
            .stdout(File::create(&out).expect("create events output file"))
            .stderr(File::create(&err).expect("create events error file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn ctr events: {e}"));
        let watcher = EventWatcher {
            child: Some(child),
            out,
            err,
        };

        // Labelling needs the namespace to exist; it may already.
        let _ = ctd.ctr(&["namespaces", "create", ctd.namespace()]);
        let key = format!("it-events-{n}");
        let mut attempt = 0;
        let subscribed = wait_until(Duration::from_secs(20), || {
            attempt += 1;
            let value = attempt.to_string();
            ctd.ctr_ok(&[
                "namespaces",
                "label",
                ctd.namespace(),
                &format!("{key}={value}"),
            ]);
            wait_until(Duration::from_millis(500), || {
                watcher.events().iter().any(|e| {
                    e.topic == "/namespaces/update"
                        && e.payload["labels"][&key].as_str() == Some(value.as_str())
                })
            })
        });
        assert!(
            subscribed,
            "ctr events saw none of our namespace label updates within 20 s\n{}\n{}",
            watcher.describe(),
            ctd.log_tail(40)
        );
        watcher
    }

    /// Every event received so far, in order.
    pub fn events(&self) -> Vec<Event> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(Event::parse)
            .collect()
    }

    /// Polls until some event satisfies `pred`; returns whether one did.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> bool {
        wait_until(timeout, || self.events().iter().any(&pred))
    }

    /// ctr's raw output and stderr, for messages.
    pub fn describe(&self) -> String {
        format!(
            "--- ctr events stdout ---\n{}\n--- ctr events stderr ---\n{}",
            fs::read_to_string(&self.out).unwrap_or_default(),
            fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Stops `ctr events` and returns everything it received.
    pub fn stop(mut self) -> Vec<Event> {
        self.kill();
        self.events()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EventWatcher {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::Event;

    #[test]
    fn parses_event_lines() {
        let line = r#"2024-11-22 19:01:02.123456789 +0000 UTC rsv2-1-0 /tasks/exit {"container_id":"c","id":"c","pid":42,"exit_status":3,"exited_at":"2024-11-22T19:01:02Z"}"#;
        let e = Event::parse(line).expect("parses");
        assert_eq!(e.namespace, "rsv2-1-0");
        assert_eq!(e.topic, "/tasks/exit");
        assert_eq!(e.container_id(), Some("c"));
        assert_eq!(e.number("exit_status"), 3);
        assert_eq!(e.number("pid"), 42);

        let line = r#"2024-11-22 19:01:02 +0000 UTC ns /tasks/exit {"container_id":"c","pid":42}"#;
        assert_eq!(Event::parse(line).expect("parses").number("exit_status"), 0);

        let e = Event::parse("2024-11-22 19:01:02 +0000 UTC ns /snapshot/prepare").expect("parses");
        assert_eq!(e.topic, "/snapshot/prepare");
        assert!(e.payload.is_null());
        assert!(Event::parse("garbage").is_none());
    }
}
