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
//!
//! The sender speaks ttrpc itself ([`Publisher`]): one Forward call at a
//! time, written and answered on the sender thread. ttrpc's sync `Client`
//! would add a writer and a reader thread to each connection, and its
//! reader wakes every 10 ms while the connection is open (issue #7).

use crate::LockExt;
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use containerd_shim::util::timestamp;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::topics::*;
use ttrpc::proto::{Codec, MESSAGE_HEADER_LENGTH, MESSAGE_LENGTH_MAX, MESSAGE_TYPE_REQUEST, MESSAGE_TYPE_RESPONSE};
use ttrpc::{Code, MessageHeader, Request, Response};

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
        let mut q = self.queue.locked();
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
            let mut q = self.queue.locked();
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
        let q = self.queue.locked();
        let (mut q, _) = self.wake.wait_timeout_while(q, IDLE, |q| q.events.is_empty() && !q.closed).unwrap_or_else(|e| e.into_inner());
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
        let mut publisher: Option<Publisher> = None;
        while let Some(event) = self.next() {
            deliver(&mut publisher, &self.address, &self.namespace, &event);
        }
    }
}

/// How long the sender thread, and its connection to containerd, stay with
/// nothing to send.
const IDLE: Duration = Duration::from_secs(2);

/// How long one Forward may take before the connection is given up (and
/// the event retried on a new one).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

const EVENTS_SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

/// A ttrpc connection to containerd's events service, one call at a time.
struct Publisher {
    stream: UnixStream,
    /// Client streams are odd and rise (ttrpc protocol).
    next_stream: u32,
}

impl Publisher {
    fn connect(address: &str) -> Result<Publisher, String> {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        let stream = UnixStream::connect(path).map_err(|e| format!("connect {path}: {e}"))?;
        stream.set_read_timeout(Some(CALL_TIMEOUT)).and_then(|()| stream.set_write_timeout(Some(CALL_TIMEOUT))).map_err(|e| e.to_string())?;
        Ok(Publisher { stream, next_stream: 1 })
    }

    /// Events/Forward: writes the request frame and reads its answer.
    fn forward(&mut self, req: &ForwardRequest) -> Result<(), String> {
        let stream_id = self.next_stream;
        self.next_stream = self.next_stream.wrapping_add(2);
        let payload = req.write_to_bytes().map_err(|e| format!("encode: {e}"))?;
        let call = Request { service: EVENTS_SERVICE.into(), method: "Forward".into(), payload, ..Default::default() };
        let body = Codec::encode(&call).map_err(|e| format!("encode: {e}"))?;
        self.stream.write_all(&crate::rpc::frame(stream_id, MESSAGE_TYPE_REQUEST, &body)).map_err(|e| format!("write: {e}"))?;
        loop {
            let mut header = [0u8; MESSAGE_HEADER_LENGTH];
            self.stream.read_exact(&mut header).map_err(|e| format!("read the answer: {e}"))?;
            let mh = MessageHeader::from(&header[..]);
            if mh.length as usize > MESSAGE_LENGTH_MAX {
                return Err(format!("an answer of {} bytes is over the ttrpc limit", mh.length));
            }
            let mut body = vec![0u8; mh.length as usize];
            self.stream.read_exact(&mut body).map_err(|e| format!("read the answer: {e}"))?;
            if mh.type_ != MESSAGE_TYPE_RESPONSE || mh.stream_id != stream_id {
                // Nothing else is asked on this connection; skip what is not ours.
                continue;
            }
            let res = <Response as Codec>::decode(&body).map_err(|e| format!("decode the answer: {e}"))?;
            return match res.status.as_ref() {
                Some(s) if s.code() != Code::OK => Err(format!("{:?}: {}", s.code(), s.message())),
                _ => Ok(()),
            };
        }
    }
}

fn send(publisher: &mut Publisher, namespace: &str, event: &Event) -> Result<(), String> {
    let envelope = Envelope {
        timestamp: MessageField::some(timestamp().map_err(|e| e.to_string())?),
        namespace: namespace.to_string(),
        topic: event.topic.to_string(),
        event: MessageField::some(event.any.clone()),
        ..Default::default()
    };
    let req = ForwardRequest { envelope: MessageField::some(envelope), ..Default::default() };
    publisher.forward(&req)
}

/// Sends one event. containerd may be restarting: reconnect, with a
/// bounded wait, and drop the event only after that. containerd re-reads
/// task state through State/Wait when it returns, so no exit is lost with
/// it.
fn deliver(publisher: &mut Option<Publisher>, address: &str, namespace: &str, event: &Event) {
    let mut delay = Duration::from_millis(50);
    for attempt in 0..8 {
        if publisher.is_none() {
            *publisher = Publisher::connect(address).map_err(|e| log::debug!("connect to {address}: {e}")).ok();
        }
        if let Some(p) = publisher.as_mut() {
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
    use std::collections::HashMap;
    use std::os::fd::OwnedFd;
    use ttrpc::{MethodHandler, TtrpcContext};

    /// containerd's side of Forward: records each envelope's topic, and
    /// refuses the topic "refuse".
    struct Forward(Arc<Mutex<Vec<String>>>);

    impl MethodHandler for Forward {
        fn handler(&self, ctx: TtrpcContext, req: Request) -> ttrpc::Result<()> {
            let fwd = ForwardRequest::parse_from_bytes(&req.payload).expect("a ForwardRequest");
            let topic = fwd.envelope.topic.clone();
            if topic == "refuse" {
                return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(Code::NOT_FOUND, "no such topic")));
            }
            self.0.locked().push(topic);
            let res = Response { payload: Vec::new(), ..Default::default() };
            ctx.respond(ctx.mh.stream_id, res)
        }
    }

    #[test]
    fn publisher_forwards_in_order_and_reports_refusals() {
        let path = std::env::temp_dir().join(format!("rsv2-events-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener: OwnedFd = std::os::unix::net::UnixListener::bind(&path).expect("bind a test socket").into();
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut methods: crate::rpc::Methods = HashMap::new();
        methods.insert(format!("/{EVENTS_SERVICE}/Forward"), Box::new(Forward(got.clone())));
        let quit = Arc::new(crate::rpc::Quit::new().unwrap());
        let q = quit.clone();
        let server = std::thread::spawn(move || crate::rpc::serve(listener, methods, &crate::workers::Workers::new(|| {}), &q, &|| false, crate::rpc::IDLE_EXIT));

        let mut p = Publisher::connect(&format!("unix://{}", path.display())).expect("connect");
        for topic in ["/tasks/create", "/tasks/start", "/tasks/exit"] {
            let event = Event { topic, any: Any::default() };
            send(&mut p, "ns", &event).expect("forward");
        }
        assert_eq!(*got.locked(), ["/tasks/create", "/tasks/start", "/tasks/exit"]);
        let err = send(&mut p, "ns", &Event { topic: "refuse", any: Any::default() }).expect_err("a refused event is an error");
        assert!(err.contains("no such topic"), "{err}");
        // The connection stays usable after a refusal.
        send(&mut p, "ns", &Event { topic: "/tasks/delete", any: Any::default() }).expect("forward after a refusal");
        assert_eq!(got.locked().last().map(String::as_str), Some("/tasks/delete"));

        quit.signal();
        server.join().unwrap().expect("serve returns once quit is signalled");
        let _ = std::fs::remove_file(&path);
    }

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
