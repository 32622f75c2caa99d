//! The simulation's network: the node's [`Network`] on turmoil's simulated
//! TCP and UDP, where the harness partitions, delays and drops messages.
//! Not a product backend: it exists to inject faults.

use std::io;
use std::net::SocketAddr;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chitchat::ChitchatEnvelope;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use vatio_cluster::net::{Conn, Listener, Network};

/// Gossip messages in flight. The gossip crate keeps its wire encoding to
/// itself, so a datagram carries only a message's number and the message
/// waits here; turmoil still decides whether, and when, the datagram
/// arrives. Shared by every node of one simulation.
#[derive(Clone, Default)]
pub struct GossipMail {
    inner: Arc<Mutex<Mail>>,
}

#[derive(Default)]
struct Mail {
    next: u64,
    waiting: HashMap<u64, ChitchatEnvelope>,
}

impl GossipMail {
    fn post(&self, envelope: ChitchatEnvelope) -> u64 {
        let mut mail = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let no = mail.next;
        mail.next += 1;
        mail.waiting.insert(no, envelope);
        no
    }

    fn take(&self, no: u64) -> Option<ChitchatEnvelope> {
        let mut mail = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        mail.waiting.remove(&no)
    }
}

/// One node's view of the simulated network.
pub struct SimNetwork {
    pub mail: GossipMail,
}

impl Network for SimNetwork {
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Listener>> {
        async move {
            // turmoil binds the unspecified address only; the host's own
            // address is what peers are told.
            let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
            let listener = turmoil::net::TcpListener::bind(any).await?;
            let local_addr = addr;
            let incoming = futures::stream::unfold(listener, move |listener| async move {
                let accepted = listener
                    .accept()
                    .await
                    .map(|(stream, remote)| Conn::new(stream, local_addr, remote));
                Some((accepted, listener))
            })
            .boxed();
            Ok(Listener {
                local_addr,
                incoming,
            })
        }
        .boxed()
    }

    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Conn>> {
        async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            let local = stream.local_addr()?;
            Ok(Conn::new(stream, local, addr))
        }
        .boxed()
    }

    fn gossip(&self, addr: SocketAddr) -> BoxFuture<'static, anyhow::Result<Box<dyn Socket>>> {
        let mail = self.mail.clone();
        async move {
            let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
            let socket = turmoil::net::UdpSocket::bind(any).await?;
            Ok(Box::new(GossipSocket { socket, addr, mail }) as Box<dyn Socket>)
        }
        .boxed()
    }
}

/// Gossip over the simulated UDP (see [`GossipMail`]).
struct GossipSocket {
    socket: turmoil::net::UdpSocket,
    /// The host's address, as peers reach it.
    addr: SocketAddr,
    mail: GossipMail,
}

#[async_trait]
impl Socket for GossipSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let no = self.mail.post(envelope);
        // A datagram to a partitioned or crashed host is lost, as over UDP
        // (its message is then never taken).
        let num_bytes_sent = self
            .socket
            .send_to(&no.to_le_bytes(), to)
            .await
            .unwrap_or(0);
        Ok(SendOutcome { num_bytes_sent })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        let mut buf = [0u8; 8];
        loop {
            let (len, from_addr) = self.socket.recv_from(&mut buf).await?;
            if len != buf.len() {
                continue;
            }
            if let Some(envelope) = self.mail.take(u64::from_le_bytes(buf)) {
                return Ok(RecvOutcome {
                    from_addr,
                    envelope,
                    num_bytes_received: len,
                });
            }
        }
    }
}
