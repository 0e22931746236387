//! The server's event stream: queue changes and every job's run events, fanned out to all
//! websocket clients of `/api/events`.

use super::jobs::JobInfo;
use crate::exec::Event;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use warp::ws::{Message, WebSocket};

/// A message on `/api/events`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerEvent {
    /// The queue changed: every job with its state.
    Queue {
        /// The jobs, oldest first.
        jobs: Vec<JobInfo>,
    },
    /// Something happened in a running job: node started, cached, finished or failed, step
    /// progress, memory reports (BlockSwap's among them), outputs written.
    Run {
        /// The job.
        job: u64,
        /// The engine's event, its fields inline.
        #[serde(flatten)]
        event: Event,
        /// For a written image, its name under `/api/images/`.
        #[serde(skip_serializing_if = "Option::is_none")]
        image: Option<String>,
        /// For a preview of a step, the picture as a PNG data URL.
        #[serde(skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
    },
}

impl ServerEvent {
    /// `event` of job `job`, with the name of the image it wrote, if any, and a preview's
    /// picture as a data URL.
    pub fn run(job: u64, event: Event, image: Option<String>) -> Self {
        let preview = match &event {
            Event::Preview { width, height, rgb, .. } => png_data_url(*width, *height, rgb),
            _ => None,
        };
        Self::Run {
            job,
            event,
            image,
            preview,
        }
    }
}

/// An RGB picture as a `data:image/png;base64,` URL, for a browser's `<img>`.
fn png_data_url(width: u32, height: u32, rgb: &[u8]) -> Option<String> {
    use base64::Engine as _;
    let picture = image::RgbImage::from_raw(width, height, rgb.to_vec())?;
    let mut png = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut png, image::ImageFormat::Png).ok()?;
    Some(format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png.get_ref())
    ))
}

/// How many events a slow client may fall behind before it misses some.
const BACKLOG: usize = 1024;

/// The sending side of the stream; cloning shares it.
#[derive(Clone, Debug)]
pub struct Broadcast(broadcast::Sender<ServerEvent>);

impl Default for Broadcast {
    fn default() -> Self {
        Self(broadcast::channel(BACKLOG).0)
    }
}

impl Broadcast {
    /// Sends to every connected client; with none connected the event is dropped.
    pub fn send(&self, event: ServerEvent) {
        let _ = self.0.send(event);
    }

    /// Whether any client listens (the editor's or ComfyUI's websocket).
    pub fn watched(&self) -> bool {
        self.0.receiver_count() > 0
    }

    /// A new receiver of everything sent from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.0.subscribe()
    }
}

/// Streams events to one websocket client, starting with `snapshot`, until it disconnects.
pub async fn stream(socket: WebSocket, snapshot: ServerEvent, mut events: broadcast::Receiver<ServerEvent>) {
    let (mut outgoing, mut incoming) = socket.split();
    let send = |event: &ServerEvent| Message::text(serde_json::to_string(event).unwrap_or_default());
    if outgoing.send(send(&snapshot)).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    if outgoing.send(send(&event)).await.is_err() {
                        return;
                    }
                }
                // A slow client skips what it missed and carries on.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
            message = incoming.next() => match message {
                Some(Ok(message)) if !message.is_close() => {}
                _ => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_events_read_back_from_json() {
        let event = ServerEvent::run(
            3,
            Event::Progress {
                node: crate::workflow::NodeId::parse("sample").unwrap(),
                step: 2,
                total: 9,
            },
            None,
        );
        let json = serde_json::to_string(&event).unwrap();
        let back: ServerEvent = serde_json::from_str(&json).expect(&json);
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
    }
}
