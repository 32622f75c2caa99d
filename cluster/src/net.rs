//! The node's network. A node serves gRPC, calls its peers and gossips over
//! real TCP and UDP sockets, unless whoever starts it hands in another
//! [`Network`] (see [`crate::node::NodeOptions`]): the simulation does, to
//! run whole clusters on a simulated network that injects faults.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::membership::GossipSocket;

/// Where a node's connections come from and go to.
pub trait Network: Send + Sync + 'static {
    /// Accepts gRPC connections on `addr`.
    fn listen(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Listener>>;
    /// Opens a connection to the gRPC server at `addr`.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Conn>>;
    /// Binds the gossip socket on `addr`.
    fn gossip(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<Arc<dyn GossipSocket>>>;
}

/// A bound listener: its address and the connections it accepts.
pub struct Listener {
    pub local_addr: SocketAddr,
    pub incoming: BoxStream<'static, io::Result<Conn>>,
}

/// Any byte stream a [`Network`] carries.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One connection, with its two ends' addresses.
pub struct Conn {
    io: Box<dyn Io>,
    local: SocketAddr,
    remote: SocketAddr,
}

impl Conn {
    pub fn new(io: impl Io, local: SocketAddr, remote: SocketAddr) -> Self {
        Self {
            io: Box::new(io),
            local,
            remote,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    // The TCP kind, so `Request::remote_addr` works as over real sockets.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: Some(self.local),
            remote_addr: Some(self.remote),
        }
    }
}

/// A channel to `endpoint` whose connections `network` opens (none is
/// opened before the first call).
pub fn lazy_channel(endpoint: &Endpoint, network: Arc<dyn Network>) -> Channel {
    let connector = tower::service_fn(move |uri: Uri| {
        let network = network.clone();
        async move {
            let addr = uri
                .authority()
                .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{uri} does not name an ip:port address"),
                    )
                })?;
            network.connect(addr).await.map(TokioIo::new)
        }
    });
    endpoint.connect_with_connector_lazy(connector)
}
