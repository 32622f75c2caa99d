//! Channels to peers, made on first use and remade when a peer's address
//! changes (it restarted elsewhere). A tonic channel reconnects by itself,
//! so one channel per peer serves every call to it, multiplexed on HTTP/2.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tonic::transport::Channel;
use vatio_proto::v1::peer_client::PeerClient;

use crate::net::{Network, lazy_channel};
use crate::placement::{Member, NodeId};
use crate::transport::{Transport, TransportError};

/// Largest message a peer call carries (a forwarded batch or a shipment).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

#[derive(Clone)]
pub struct PeerClients {
    transport: Transport,
    /// The node's network when it is not the real one (a simulation's).
    network: Option<Arc<dyn Network>>,
    channels: Arc<Mutex<BTreeMap<NodeId, (SocketAddr, Channel)>>>,
}

impl PeerClients {
    pub fn new(transport: Transport, network: Option<Arc<dyn Network>>) -> Self {
        Self {
            transport,
            network,
            channels: Arc::default(),
        }
    }

    /// A client for `member` (connects lazily).
    pub fn client(&self, member: &Member) -> Result<PeerClient<Channel>, TransportError> {
        Ok(PeerClient::new(self.channel(member)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }

    /// The mutually authenticated channel to `member`, for any of its
    /// services (cluster-wide queries and dead-letter calls use it too).
    pub fn channel(&self, member: &Member) -> Result<Channel, TransportError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(&member.id) {
            Some((addr, channel)) if *addr == member.addr => channel.clone(),
            _ => {
                let endpoint = self
                    .transport
                    .peer_endpoint(member.id.as_str(), member.addr)?;
                let channel = match &self.network {
                    None => endpoint.connect_lazy(),
                    Some(network) => lazy_channel(&endpoint, network.clone()),
                };
                channels.insert(member.id.clone(), (member.addr, channel.clone()));
                channel
            }
        };
        Ok(channel)
    }
}
