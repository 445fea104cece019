//! All cross-core traffic: a full mesh of bounded glommio channels that
//! carries message handles to the core owning their recipients' domains.
//!
//! Only handles travel (an id, a slice of a shared mapping, recipients);
//! never a body. A full channel makes the sender wait: the accepting session
//! then holds its 250 until the owner has room, which is the back-pressure
//! we want.

use crate::message::MessageHandle;
use crate::queue::Queues;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use glommio::{GlommioError, ResourceType};
use std::rc::Rc;

/// Handles in flight between one pair of cores.
pub const CHANNEL_HANDLES_MAX: usize = 4096;

pub type Builder = MeshBuilder<MessageHandle, Full>;

pub fn builder(cores: usize) -> Builder {
    MeshBuilder::full(cores, CHANNEL_HANDLES_MAX)
}

/// This core's ends of the mesh.
pub struct Mesh {
    senders: Senders<MessageHandle>,
}

impl Mesh {
    /// Joins the mesh (every core must) and starts receiving into `queues`.
    pub async fn join(builder: Builder, queues: Rc<Queues>) -> Mesh {
        let (senders, mut receivers): (Senders<MessageHandle>, Receivers<MessageHandle>) =
            builder.join().await.expect("every core joins the mesh");
        for (_, stream) in receivers.streams() {
            let queues = queues.clone();
            glommio::spawn_local(async move {
                while let Some(handle) = stream.recv().await {
                    queues.enqueue(handle);
                }
            })
            .detach();
        }
        Mesh { senders }
    }

    pub fn core(&self) -> usize {
        self.senders.peer_id()
    }

    /// Sends a handle to core `to` (not this one), waiting while its channel is full.
    /// Gives the handle back if the peer has closed its end.
    pub async fn send(
        &self,
        to: usize,
        handle: MessageHandle,
    ) -> Result<(), Option<MessageHandle>> {
        debug_assert_ne!(to, self.core());
        self.senders.send_to(to, handle).await.map_err(|e| match e {
            GlommioError::Closed(ResourceType::Channel(h))
            | GlommioError::WouldBlock(ResourceType::Channel(h)) => Some(h),
            _ => None,
        })
    }

    /// Closes this core's sending ends; peers' receive loops end when all are closed.
    pub fn close(&self) {
        self.senders.close();
    }
}
