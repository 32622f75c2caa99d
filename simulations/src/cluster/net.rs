//! The simulation's network: the node's [`Network`] on turmoil's simulated
//! TCP and UDP, where the harness partitions, delays and drops messages.
//! Not a product backend: it exists to inject faults.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use vatio_cluster::membership::GossipSocket;
use vatio_cluster::net::{Conn, Listener, Network};

/// One node's view of the simulated network.
pub struct SimNetwork;

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

    fn gossip(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Arc<dyn GossipSocket>>> {
        async move {
            let any = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
            let socket = turmoil::net::UdpSocket::bind(any).await?;
            Ok(Arc::new(SimGossip { socket, addr }) as Arc<dyn GossipSocket>)
        }
        .boxed()
    }
}

/// Gossip over the simulated UDP: turmoil decides whether, and when, each
/// datagram arrives.
struct SimGossip {
    socket: turmoil::net::UdpSocket,
    /// The host's address, as peers reach it.
    addr: SocketAddr,
}

#[async_trait]
impl GossipSocket for SimGossip {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.socket.send_to(datagram, to).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.socket.recv_from(buf).await
    }
}
