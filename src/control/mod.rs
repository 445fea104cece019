//! The control plane's only way into the cores: a second mesh of bounded
//! glommio channels, beside the one that carries messages, that carries
//! [`Request`]s from the core serving an admin request to the cores that
//! can answer it, and their [`Reply`]s back on a oneshot channel.
//!
//! A question about one domain goes to the core that owns it; a summary
//! asks every core and gathers. A change (a suspension, say) is given to
//! every core, each of which keeps its own copy ([`crate::shaping::operator`]).
//! Nothing here locks: a core answers from its own state, in its own task.
//! A core that does not answer within [`ANSWER_TIMEOUT`] is reported as
//! such rather than holding the request.

mod answer;
pub mod report;

use crate::delivery_log::stream;
use crate::engine::Core;
use crate::shaping::operator::{Action, Selector};
use futures_channel::oneshot;
use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};
use report::{CoreMetrics, CoreSummary, QueueDetail, QueueRow, Queued, Sort};
use std::rc::Rc;
use std::time::Duration;

/// Requests in flight between one pair of cores.
pub const CHANNEL_REQUESTS_MAX: usize = 64;
/// How long a core may take to answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub type Builder = MeshBuilder<Envelope, Full>;

pub fn builder(cores: usize) -> Builder {
    MeshBuilder::full(cores, CHANNEL_REQUESTS_MAX)
}

pub enum Request {
    Summary,
    /// The core's top `limit` domains by `sort`.
    Queues {
        sort: Sort,
        limit: usize,
    },
    Queue {
        domain: String,
    },
    Act(Action),
    End(u64),
    Actions,
    /// Bounces what is queued for the selector, with DSNs.
    Bounce {
        selector: Selector,
        by: String,
        reason: String,
    },
    /// Queued recipients of a message id, or of a recipient address.
    Find {
        id: Option<u64>,
        recipient: Option<String>,
    },
    Metrics,
    Subscribe {
        filter: stream::Filter,
        tx: stream::Sender,
    },
    /// A suppression change, to the core that owns its address: journal
    /// it, put it in force everywhere, log it.
    Suppress(crate::suppression::lists::Change),
    /// A suppression change its owner committed: put it in force here.
    Replicate(crate::suppression::lists::Change),
    /// Writes an `Admin` record to this core's delivery log.
    Log {
        what: String,
        by: String,
        reason: String,
    },
}

pub enum Reply {
    Summary(CoreSummary),
    Queues(Vec<QueueRow>),
    Queue(Option<Box<QueueDetail>>),
    /// An action was put in force (false: the list was full).
    Acted(bool),
    Ended(Option<Action>),
    Actions(Vec<Action>),
    Bounced(u64),
    Found(Vec<Queued>),
    Metrics(Box<CoreMetrics>),
    Subscribed(bool),
    Suppressed(Result<crate::suppression::lists::Applied, String>),
    Done,
    /// The core did not answer in time, or is gone.
    Unavailable(usize),
}

pub struct Envelope {
    request: Request,
    reply: oneshot::Sender<Reply>,
}

/// This core's end of the control mesh, for the admin server.
pub struct Control {
    senders: Senders<Envelope>,
    core: Rc<Core>,
}

/// This core's ends of the control mesh, joined but not yet answering.
pub struct Joined {
    senders: Senders<Envelope>,
    receivers: Receivers<Envelope>,
}

/// Joins the mesh. Every core must, before anything that can fail: a
/// core that never joins would hold the others' joins forever.
pub async fn join(builder: Builder) -> Joined {
    let (senders, receivers) = builder
        .join()
        .await
        .expect("every core joins the control mesh");
    Joined { senders, receivers }
}

impl Joined {
    /// Starts answering requests on `core`.
    pub fn serve(mut self, core: Rc<Core>) -> Rc<Control> {
        for (_, stream) in self.receivers.streams() {
            let core = core.clone();
            glommio::spawn_local(async move {
                while let Some(env) = stream.recv().await {
                    let core = core.clone();
                    glommio::spawn_local(async move {
                        let reply = answer::answer(&core, env.request).await;
                        let _ = env.reply.send(reply);
                    })
                    .detach();
                }
            })
            .detach();
        }
        Rc::new(Control {
            senders: self.senders,
            core,
        })
    }
}

impl Control {
    pub fn cores(&self) -> usize {
        self.core.cores
    }

    pub fn core(&self) -> &Rc<Core> {
        &self.core
    }

    /// The core that owns `domain`.
    pub fn owner(&self, domain: &str) -> usize {
        crate::router::owner_of(domain, self.core.cores)
    }

    /// Asks core `to`. The answer runs in a task of its own on that core
    /// (this one too): a client that goes away never cuts a change (a
    /// bounce, say) halfway.
    pub async fn ask(&self, to: usize, request: Request) -> Reply {
        let (tx, rx) = oneshot::channel();
        if to == self.core.index {
            let core = self.core.clone();
            glommio::spawn_local(async move {
                let _ = tx.send(answer::answer(&core, request).await);
            })
            .detach();
            return rx.await.unwrap_or(Reply::Unavailable(to));
        }
        let env = Envelope { request, reply: tx };
        let asked = async {
            if self.senders.send_to(to, env).await.is_err() {
                return Reply::Unavailable(to);
            }
            rx.await.unwrap_or(Reply::Unavailable(to))
        };
        let late = async {
            glommio::timer::sleep(ANSWER_TIMEOUT).await;
            Reply::Unavailable(to)
        };
        futures_lite::future::or(asked, late).await
    }

    /// Asks every core at once; the replies in core order.
    pub async fn ask_all(self: &Rc<Self>, request: impl Fn() -> Request) -> Vec<Reply> {
        let asks: Vec<_> = (0..self.cores())
            .map(|to| {
                let me = self.clone();
                let request = request();
                glommio::spawn_local(async move { me.ask(to, request).await })
            })
            .collect();
        let mut replies = Vec::with_capacity(asks.len());
        for ask in asks {
            replies.push(ask.await);
        }
        replies
    }
}
