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

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
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
    address: String,
    namespace: String,
    queue: Mutex<Queue>,
    /// Signalled when an event is queued or the queue is closed.
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Event>,
    /// The sender thread, while one runs. It ends after [`IDLE`] with
    /// nothing to send, and the next event starts another.
    sender: Option<JoinHandle<()>>,
    closed: bool,
}

impl Events {
    pub fn start(ttrpc_address: String, namespace: String) -> Arc<Events> {
        Arc::new(Events { address: ttrpc_address, namespace, queue: Mutex::new(Queue::default()), wake: Condvar::new() })
    }

    pub fn publish<E: TaskEvent>(self: &Arc<Self>, event: E) {
        log::debug!("publish {}", E::TOPIC);
        let any = match event.write_to_bytes() {
            Ok(value) => Any { type_url: E::TYPE.to_string(), value, ..Default::default() },
            Err(e) => return log::error!("encode {}: {e}", E::TYPE),
        };
        let mut q = self.queue.lock().unwrap();
        if q.closed {
            return;
        }
        q.events.push_back(Event { topic: E::TOPIC, any });
        if q.sender.is_none() {
            let me = self.clone();
            match std::thread::Builder::new().name("events".into()).spawn(move || me.forward()) {
                Ok(handle) => q.sender = Some(handle),
                Err(e) => log::error!("start the events sender: {e}"),
            }
        }
        self.wake.notify_one();
    }

    /// Sends what is queued, then stops. Used at shutdown so TaskDelete is
    /// not lost with the process.
    pub fn close(&self) {
        let sender = {
            let mut q = self.queue.lock().unwrap();
            q.closed = true;
            self.wake.notify_one();
            q.sender.take()
        };
        if let Some(t) = sender {
            let _ = t.join();
        }
    }

    /// The next event, or None once the queue has been empty for [`IDLE`]
    /// (the thread then ends) or is closed and empty.
    fn next(&self) -> Option<Event> {
        let q = self.queue.lock().unwrap();
        let (mut q, _) = self.wake.wait_timeout_while(q, IDLE, |q| q.events.is_empty() && !q.closed).unwrap();
        let event = q.events.pop_front();
        if event.is_none() && !q.closed {
            // Under the lock: a publish from now on starts a new sender.
            q.sender = None;
        }
        event
    }

    /// The sender thread: one connection to containerd while there is
    /// something to send.
    fn forward(&self) {
        let mut publisher: Option<EventsClient> = None;
        while let Some(event) = self.next() {
            deliver(&mut publisher, &self.address, &self.namespace, &event);
        }
    }
}

/// How long the sender thread, and its connection to containerd, stay with
/// nothing to send: the connection's ttrpc client holds two threads more,
/// none of which an idle shim need keep.
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

/// Sends one event. containerd may be restarting: reconnect, with a
/// bounded wait, and drop the event only after that. containerd re-reads
/// task state through State/Wait when it returns, so no exit is lost with
/// it.
fn deliver(publisher: &mut Option<EventsClient>, address: &str, namespace: &str, event: &Event) {
    let mut delay = Duration::from_millis(50);
    for attempt in 0..8 {
        if publisher.is_none() {
            *publisher = open(address).map_err(|e| log::debug!("connect to {address}: {e}")).ok();
        }
        if let Some(p) = publisher.as_ref() {
            match send(p, namespace, event) {
                Ok(()) => return,
                Err(e) => {
                    log::warn!("publish {} (attempt {}): {e}", event.topic, attempt + 1);
                    *publisher = None;
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
