//! Publishing task events to containerd, in order.
//!
//! One thread drains a queue, so events leave in exactly the order the
//! service enqueued them (Create → Start → Exit → Delete) and a slow or
//! restarting containerd never blocks a Task call.
//!
//! Each event is encoded when it is queued, under a type name of our own
//! ([`TaskEvent`]): naming it through protobuf reflection, as
//! containerd-shim's RemotePublisher does, builds the descriptors of every
//! proto file it imports (descriptor.proto and its comments included),
//! about 300 KiB of heap that every idle shim would then keep.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::Duration;

use containerd_shim::util::{connect, timestamp};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::topics::*;
use containerd_shim_protos::{Client, EventsClient};
use ttrpc::context::Context;

/// An event containerd knows: its topic and its type's full protobuf name,
/// which containerd's typeurl registry resolves.
pub trait TaskEvent: Message {
    const TOPIC: &'static str;
    const TYPE: &'static str;
}

macro_rules! task_events {
    ($($ty:ident => $topic:ident),* $(,)?) => {
        $(impl TaskEvent for $ty {
            const TOPIC: &'static str = $topic;
            const TYPE: &'static str = concat!("containerd.events.", stringify!($ty));
        })*
    };
}

task_events! {
    TaskCreate => TASK_CREATE_EVENT_TOPIC,
    TaskStart => TASK_START_EVENT_TOPIC,
    TaskExit => TASK_EXIT_EVENT_TOPIC,
    TaskOOM => TASK_OOM_EVENT_TOPIC,
    TaskExecAdded => TASK_EXEC_ADDED_EVENT_TOPIC,
    TaskExecStarted => TASK_EXEC_STARTED_EVENT_TOPIC,
    TaskPaused => TASK_PAUSED_EVENT_TOPIC,
    TaskResumed => TASK_RESUMED_EVENT_TOPIC,
    TaskDelete => TASK_DELETE_EVENT_TOPIC,
}

struct Event {
    topic: &'static str,
    any: Any,
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

    pub fn publish<E: TaskEvent>(&self, event: E) {
        log::debug!("publish {}", E::TOPIC);
        let any = match event.write_to_bytes() {
            Ok(value) => Any { type_url: E::TYPE.to_string(), value, ..Default::default() },
            Err(e) => return log::error!("encode {}: {e}", E::TYPE),
        };
        if let Some(tx) = self.tx.lock().unwrap().as_ref() {
            let _ = tx.send(Event { topic: E::TOPIC, any });
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

fn open(address: &str) -> Result<EventsClient, String> {
    let fd = connect(address).map_err(|e| e.to_string())?;
    Ok(EventsClient::new(Client::new(fd).map_err(|e| e.to_string())?))
}

fn send(client: &EventsClient, namespace: &str, event: &Event) -> Result<(), String> {
    let envelope = Envelope {
        timestamp: MessageField::some(timestamp().map_err(|e| e.to_string())?),
        namespace: namespace.to_string(),
        topic: event.topic.to_string(),
        event: MessageField::some(event.any.clone()),
        ..Default::default()
    };
    let req = ForwardRequest { envelope: MessageField::some(envelope), ..Default::default() };
    client.forward(Context::default(), &req).map(drop).map_err(|e| e.to_string())
}

fn forward(rx: Receiver<Event>, address: &str, namespace: &str) {
    let mut publisher: Option<EventsClient> = None;
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
                publisher = open(address).map_err(|e| log::debug!("connect to {address}: {e}")).ok();
            }
            if let Some(p) = &publisher {
                match send(p, namespace, &event) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::MessageFull;

    fn named_as_the_proto<E: TaskEvent + MessageFull>() {
        assert_eq!(E::TYPE, E::descriptor().full_name());
    }

    #[test]
    fn event_type_names_match_their_protos() {
        named_as_the_proto::<TaskCreate>();
        named_as_the_proto::<TaskStart>();
        named_as_the_proto::<TaskExit>();
        named_as_the_proto::<TaskOOM>();
        named_as_the_proto::<TaskExecAdded>();
        named_as_the_proto::<TaskExecStarted>();
        named_as_the_proto::<TaskPaused>();
        named_as_the_proto::<TaskResumed>();
        named_as_the_proto::<TaskDelete>();
        assert_eq!(
            crate::service::PROCESS_DETAILS_TYPE,
            containerd_shim_protos::shim::oci::ProcessDetails::descriptor().full_name()
        );
    }
}
