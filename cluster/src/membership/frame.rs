//! The gossip datagram: the cluster id, then the SWIM message.
//!
//! `[len: u8][cluster id: len bytes][message]`. A node drops datagrams of
//! another cluster before decoding them, so two clusters sharing a network
//! (or a stray sender) never mix their members.

/// Why a datagram was dropped.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("a datagram of {len} bytes is too short for its cluster id")]
    Truncated { len: usize },
    #[error("a datagram of cluster {found:?}, not of this node's cluster")]
    OtherCluster { found: String },
}

/// The longest cluster id a frame carries.
pub(crate) const CLUSTER_ID_MAX: usize = u8::MAX as usize;

/// Writes `cluster_id` and `message` as one datagram into `out`.
pub(crate) fn encode(cluster_id: &str, message: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let id = cluster_id.as_bytes();
    let len = u8::try_from(id.len()).unwrap_or(u8::MAX);
    out.push(len);
    out.extend_from_slice(&id[..usize::from(len)]);
    out.extend_from_slice(message);
}

/// The message in `datagram` if it belongs to `cluster_id`.
pub(crate) fn decode<'a>(cluster_id: &str, datagram: &'a [u8]) -> Result<&'a [u8], FrameError> {
    let truncated = || FrameError::Truncated {
        len: datagram.len(),
    };
    let (&len, rest) = datagram.split_first().ok_or_else(truncated)?;
    let len = usize::from(len);
    let id = rest.get(..len).ok_or_else(truncated)?;
    if id != cluster_id.as_bytes() {
        return Err(FrameError::OtherCluster {
            found: String::from_utf8_lossy(id).into_owned(),
        });
    }
    Ok(&rest[len..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_this_cluster_comes_back_whole() {
        let mut out = Vec::new();
        encode("plant-7", b"swim", &mut out);
        assert_eq!(decode("plant-7", &out), Ok(&b"swim"[..]));
    }

    #[test]
    fn a_message_of_another_cluster_is_dropped_by_name() {
        let mut out = Vec::new();
        encode("plant-8", b"swim", &mut out);
        assert_eq!(
            decode("plant-7", &out),
            Err(FrameError::OtherCluster {
                found: "plant-8".to_owned()
            })
        );
        // A prefix of the cluster id is another cluster too.
        encode("plant", b"-7swim", &mut out);
        assert!(matches!(
            decode("plant-7", &out),
            Err(FrameError::OtherCluster { .. })
        ));
    }

    #[test]
    fn short_datagrams_are_dropped() {
        assert_eq!(decode("c", &[]), Err(FrameError::Truncated { len: 0 }));
        assert_eq!(
            decode("c", &[5, b'c']),
            Err(FrameError::Truncated { len: 2 })
        );
    }
}
