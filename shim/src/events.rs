//! Publishing task events to containerd, in order.
//!
//! One thread drains a queue, so events leave in exactly the order the
//! service enqueued them (Create → Start → Exit → Delete) and a slow or
//! restarting containerd never blocks a Task call.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Context;
use containerd_shim_protos::protobuf::MessageDyn;

struct Event {
    topic: &'static str,
    message: Box<dyn MessageDyn>,
}

pub struct Events {
    tx: Mutex<Option<Sender<Event>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Events {
    pub fn start(ttrpc_address: String, namespace: String) -> Events {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || forward(rx, &ttrpc_address, &namespace))
            .ok();
        Events { tx: Mutex::new(Some(tx)), thread: Mutex::new(thread) }
    }

    pub fn publish(&self, topic: &'static str, message: Box<dyn MessageDyn>) {
        log::debug!("publish {topic}");
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(Event { topic, message });
        }
    }

    /// Sends what is queued, then stops. Used at shutdown so TaskDelete is
    /// not lost with the process.
    pub fn close(&self) {
        self.tx.lock().unwrap().take();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
    }
}

/// How long the connection to containerd stays open with nothing to send.
/// Its ttrpc client holds two threads, which an idle shim need not keep.
const IDLE: Duration = Duration::from_secs(2);

fn forward(rx: Receiver<Event>, address: &str, namespace: &str) {
    let mut publisher: Option<RemotePublisher> = None;
    loop {
        let event = match rx.recv_timeout(IDLE) {
            Ok(e) => e,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                publisher = None;
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        // containerd may be restarting: reconnect, with a bounded wait, and
        // drop the event only after that. containerd re-reads task state
        // through State/Wait when it returns, so no exit is lost with it.
        let mut delay = Duration::from_millis(50);
        for attempt in 0..8 {
            if publisher.is_none() {
                publisher = RemotePublisher::new(address).map_err(|e| log::debug!("connect to {address}: {e}")).ok();
            }
            if let Some(p) = &publisher {
                match p.publish(Context::default(), event.topic, namespace, event.message.clone_box()) {
                    Ok(()) => break,
                    Err(e) => {
                        log::warn!("publish {} (attempt {}): {e}", event.topic, attempt + 1);
                        publisher = None;
                    }
                }
            }
            if attempt == 7 {
                log::error!("dropped event {} after retries", event.topic);
            } else {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}
