//! The datagram socket gossip runs on: real UDP, or whatever a simulated
//! network hands the node (see [`crate::net::Network::gossip`]).

use std::io;
use std::net::SocketAddr;

use async_trait::async_trait;

/// A bound datagram socket. Both calls take `&self` so that one task can
/// receive while another sends.
#[async_trait]
pub trait GossipSocket: Send + Sync + 'static {
    /// The address the socket is bound to.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// Sends one datagram. Delivery is not promised, as over UDP.
    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()>;
    /// Waits for one datagram, written to the start of `buf`: its length and
    /// its sender.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
}

/// Gossip over the machine's UDP.
pub struct UdpGossip(tokio::net::UdpSocket);

impl UdpGossip {
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        tokio::net::UdpSocket::bind(addr).await.map(Self)
    }
}

#[async_trait]
impl GossipSocket for UdpGossip {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    async fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<()> {
        self.0.send_to(datagram, to).await.map(|_| ())
    }

    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.0.recv_from(buf).await
    }
}
